"""`realign generate` end to end on real CatQA items (dummy backend and a tiny Llama with hf)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _generate_helpers import VLLM_FRIENDLY, require_benchmarks

from harness.cli import main as realign
from harness.core.records import GenerationRecord, read_jsonl


def test_cli_dummy_on_catqa_zh_resumes(tmp_path: Path, data_dir: Path, capsys) -> None:
    require_benchmarks()
    out = tmp_path / "gen.jsonl"
    argv = ["generate", "--model", "none", "--backend", "dummy", "--benchmark", "catqa", "--lang", "zh"]
    argv += ["--limit", "6", "--quiet", "--out", str(out)]
    realign(argv)
    records = read_jsonl(out, GenerationRecord)
    assert len(records) == 6
    assert {r.language for r in records} == {"zh"}
    assert {r.benchmark for r in records} == {"catqa"}
    assert "6 generations for 6 items" in capsys.readouterr().out
    before = out.read_text()
    realign(argv)  # a re-run resumes: nothing new
    assert out.read_text() == before


def test_cli_hf_on_tiny_llama(tmp_path: Path, data_dir: Path, tiny_llama_factory) -> None:
    require_benchmarks()
    model = tiny_llama_factory("gen", **VLLM_FRIENDLY)
    out = tmp_path / "gen.jsonl"
    realign(
        ["generate", "--model", str(model), "--backend", "hf", "--benchmark", "catqa", "--lang", "en", "--sample", "3",
         "--seed", "1", "--max-new-tokens", "8", "--system-prompt", "Be safe.", "--quiet", "--out", str(out)]
    )  # fmt: skip
    records = read_jsonl(out, GenerationRecord)
    assert len(records) == 3 and all(r.backend == "hf" for r in records)
    assert all("<|im_start|>system\nBe safe.<|im_end|>" in r.prompt_text for r in records)
    assert all(r.num_tokens is not None and 1 <= r.num_tokens <= 8 for r in records)


def test_cli_bad_options_are_clear_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        realign(["generate", "--model", "none", "--backend", "dummy", "--benchmark", "catqa", "--num-samples", "3",
                 "--out", str(tmp_path / "x.jsonl")])  # fmt: skip
    assert exit_info.value.code == 2
    assert "temperature > 0" in capsys.readouterr().err
