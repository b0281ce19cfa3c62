"""Benchmarks: YAML specs + loaders (local files first), prompt building, scorers, code sandbox."""

from benchmarks._core import (
    BENCHMARKS,
    Benchmark,
    BenchmarkSpec,
    FieldMap,
    SourceSpec,
    get_benchmark,
    is_spec_path,
    list_benchmarks,
    load_spec,
    parse_field_overrides,
)
from benchmarks._prompts import build_chat_prompt, chat_messages
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
    "load_spec",
    "parse_field_overrides",
]
