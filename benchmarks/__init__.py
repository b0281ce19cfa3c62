"""Benchmarks: YAML specs + loaders (local files first), prompt building, scorers, code sandbox."""

from benchmarks._benchmark import Benchmark
from benchmarks._prompts import build_chat_prompt, chat_messages
from benchmarks._readers import read_rows
from benchmarks._registry import (
    BENCHMARKS,
    get_benchmark,
    is_spec_path,
    list_benchmarks,
    load_builtin_benchmarks,
    load_spec,
)
from benchmarks._spec import BenchmarkSpec, FieldMap, SourceSpec, parse_field_overrides
from benchmarks._splits import SPLITS, is_eval_holdout

__all__ = [
    "BENCHMARKS",
    "SPLITS",
    "Benchmark",
    "BenchmarkSpec",
    "FieldMap",
    "SourceSpec",
    "build_chat_prompt",
    "chat_messages",
    "get_benchmark",
    "is_eval_holdout",
    "is_spec_path",
    "list_benchmarks",
    "load_builtin_benchmarks",
    "load_spec",
    "parse_field_overrides",
    "read_rows",
]
