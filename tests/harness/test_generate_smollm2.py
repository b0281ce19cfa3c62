"""The issue's bar: with the bundled SmolLM2-135M-Instruct, `realign generate` on 20 CatQA-en items
gives the same greedy text from the hf and vllm backends. Slow: ~2 x 5000 tokens on CPU plus vLLM start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from _generate_helpers import require_benchmarks

from harness.cli import main as realign
from harness.core.records import GenerationRecord, read_jsonl

pytestmark = pytest.mark.slow


def _generate(model: Path, backend: str, out: Path) -> list[GenerationRecord]:
    argv = ["generate", "--model", str(model), "--benchmark", "catqa", "--lang", "en", "--limit", "20"]
    argv += ["--backend", backend, "--max-new-tokens", "256", "--quiet", "--out", str(out)]
    realign(argv)
    return read_jsonl(out, GenerationRecord)


def test_smollm2_catqa_hf_and_vllm_agree(smollm2_dir: Path, tmp_path: Path, data_dir: Path) -> None:
    pytest.importorskip("vllm")
    require_benchmarks()
    hf = _generate(smollm2_dir, "hf", tmp_path / "hf.jsonl")
    vllm = _generate(smollm2_dir, "vllm", tmp_path / "vllm.jsonl")
    assert len(hf) == len(vllm) == 20
    assert [r.item_id for r in hf] == [r.item_id for r in vllm]
    assert [r.prompt_hash for r in hf] == [r.prompt_hash for r in vllm]
    assert {r.model_hash for r in hf} == {r.model_hash for r in vllm}
    identical = [a.completion == b.completion for a, b in zip(hf, vllm, strict=True)]
    assert all(identical), f"{sum(identical)}/20 identical"
