"""Generation: config identity, the dummy backend, the HF backend on tiny random Llamas, resume."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _generate_helpers import PROMPTS, VLLM_FRIENDLY, make_items, make_lora, merge_lora

from harness.core.errors import CheckpointError, ConfigError, DataError, did_you_mean
from harness.core.records import GenerationRecord, read_jsonl
from harness.generate import (
    GenerationConfig,
    adapter_rank,
    build_prompt,
    generate_items,
    get_backend,
    model_hash,
)

SHORT = GenerationConfig(max_new_tokens=12, batch_size=8)


# -- config ---------------------------------------------------------------------------------------
def test_config_hash_ignores_batch_size_but_not_decoding() -> None:
    base = GenerationConfig()
    assert base.hash() == GenerationConfig(batch_size=3).hash()
    assert base.hash() != GenerationConfig(max_new_tokens=255).hash()
    assert base.hash() != GenerationConfig(stop=("\n",)).hash()
    assert GenerationConfig(temperature=0.7, seed=1).hash() != GenerationConfig(temperature=0.7, seed=2).hash()


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="identical greedy"):
        GenerationConfig(num_samples=4)
    with pytest.raises(ValueError, match="extra"):
        GenerationConfig(max_tokens=5)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="non-empty"):
        GenerationConfig(stop=("",))


def test_unknown_backend_suggests_near_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'vllm'"):
        get_backend("vlm", "x")


# -- dummy backend ----------------------------------------------------------------------------------
def test_dummy_is_deterministic_and_honours_limits() -> None:
    backend = get_backend("dummy")
    prompts = [f"prompt {i}" for i in range(20)]
    first = backend.generate(prompts, GenerationConfig())
    assert first == get_backend("dummy").generate(prompts, GenerationConfig())
    assert len({c[0].text for c in first}) > 1  # hash-chosen, not one constant answer
    sampled = GenerationConfig(temperature=1.0, num_samples=6, seed=3)
    out = backend.generate(prompts[:1], sampled)[0]
    assert len(out) == 6 and out == backend.generate(prompts[:1], sampled)[0]
    custom = get_backend("dummy", responses=["alpha beta gamma. delta epsilon"])
    short = custom.generate(["p"], GenerationConfig(max_new_tokens=2))[0][0]
    assert (short.text, short.finish_reason, short.num_tokens) == ("alpha beta", "length", 2)
    stopped = custom.generate(["p"], GenerationConfig(stop=(".",)))[0][0]
    assert (stopped.text, stopped.finish_reason) == ("alpha beta gamma", "stop")


# -- generate_items, resume -------------------------------------------------------------------------
def test_generate_items_resumes_after_truncated_file(tmp_path: Path) -> None:
    items = make_items(10)
    out = tmp_path / "gen.jsonl"
    full = read_jsonl(
        generate_items(None, items, backend="dummy", config=SHORT, out_path=out, progress=False),
        GenerationRecord,
    )
    assert [r.item_id for r in full] == [i.id for i in items]
    reference = out.read_text()

    # A run killed mid-write: 6 complete lines and half of the 7th.
    lines = reference.splitlines(keepends=True)
    out.write_text("".join(lines[:6]) + lines[6][:25])
    backend = get_backend("dummy")
    generate_items(None, items, backend=backend, config=SHORT, out_path=out, progress=False)
    assert out.read_text() == reference
    assert backend.calls == 1  # only the missing 4 items, one batch

    generate_items(None, items, backend=backend, config=SHORT, out_path=out, progress=False)
    assert backend.calls == 1  # all done: nothing regenerated
    assert out.read_text() == reference


def test_generate_items_refuses_a_file_from_another_config(tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    items = make_items(3)
    generate_items(None, items, backend="dummy", config=SHORT, out_path=out, progress=False)
    before = out.read_text()
    with pytest.raises(ConfigError, match="gen_config_hash"):
        generate_items(
            None,
            items,
            backend="dummy",
            config=GenerationConfig(max_new_tokens=5),
            out_path=out,
            progress=False,
        )
    with pytest.raises(ConfigError, match="different prompt"):
        generate_items(
            None, items, backend="dummy", config=SHORT, out_path=out, system_prompt="Be safe.", progress=False
        )
    assert out.read_text() == before
    with pytest.raises(DataError, match="more than once"):
        generate_items(
            None,
            items + items[:1],
            backend="dummy",
            config=SHORT,
            out_path=tmp_path / "x.jsonl",
            progress=False,
        )


def test_generate_items_samples_with_dummy(tmp_path: Path) -> None:
    config = GenerationConfig(temperature=0.8, num_samples=3, seed=7)
    out = generate_items(
        None, make_items(4), backend="dummy", config=config, out_path=tmp_path / "s.jsonl", progress=False
    )
    records = read_jsonl(out, GenerationRecord)
    assert [(r.item_id, r.sample_index) for r in records] == [(f"toy-{i}", s) for i in range(4) for s in range(3)]
    assert {r.gen_config_hash for r in records} == {config.hash()}


# -- HF backend on a tiny random Llama --------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_llama_factory) -> Path:
    return tiny_llama_factory("gen", **VLLM_FRIENDLY)


@pytest.fixture(scope="module")
def hf(tiny: Path):
    backend = get_backend("hf", tiny)
    yield backend
    backend.close()


def _chat(tiny: Path) -> list[str]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    return [build_prompt(item, tokenizer) for item in make_items()]


def test_hf_batched_greedy_equals_one_by_one(hf, tiny: Path) -> None:
    prompts = _chat(tiny)
    assert len({len(p) for p in prompts}) == len(prompts)  # different lengths, so left padding matters
    batched = hf.generate(prompts, GenerationConfig(max_new_tokens=16, batch_size=len(prompts)))
    single = hf.generate(prompts, GenerationConfig(max_new_tokens=16, batch_size=1))
    assert [c[0].text for c in batched] == [c[0].text for c in single]
    assert all(c[0].num_tokens >= 1 for c in batched)
    assert any(c[0].text.strip() for c in batched)


def test_hf_stop_strings_cut_output(hf, tiny: Path) -> None:
    prompts = _chat(tiny)
    free = hf.generate(prompts, GenerationConfig(max_new_tokens=16))
    # A random model babbles bytes; take a word it does emit, after the first few tokens, as the stop.
    hits = [(i, m) for i, c in enumerate(free) for m in re.finditer("[A-Za-z]{2,}", c[0].text) if m.start() > 0]
    assert hits, [c[0].text for c in free]
    index, match = hits[0]
    stop = match.group()
    cut = hf.generate(prompts, GenerationConfig(max_new_tokens=16, stop=(stop,)))
    for before, after in zip(free, cut, strict=True):
        assert after[0].text == before[0].text.split(stop)[0]
    assert cut[index][0].text == free[index][0].text[: match.start()]
    assert cut[index][0].finish_reason == "stop"
    assert cut[index][0].num_tokens < free[index][0].num_tokens  # generation halted, not just trimmed


def test_hf_sampling_is_seeded_per_prompt(hf, tiny: Path) -> None:
    prompts = _chat(tiny)
    config = GenerationConfig(max_new_tokens=10, temperature=1.0, num_samples=2, seed=1)
    first = hf.generate(prompts, config)
    assert hf.generate(prompts[::-1], config)[::-1] == first  # order and batch mates do not matter
    assert hf.generate(prompts, config.model_copy(update={"seed": 2})) != first
    assert first[0][0].text != first[0][1].text


def test_hf_lora_is_applied_and_equals_merged_weights(hf, tiny: Path, tmp_path_factory) -> None:
    root = tmp_path_factory.mktemp("lora")
    adapter = make_lora(tiny, root / "adapter", r=4)
    assert adapter_rank(adapter) == 4
    merged = merge_lora(tiny, adapter, root / "merged")
    prompts = _chat(tiny)
    config = GenerationConfig(max_new_tokens=12)
    base_out = hf.generate(prompts, config)
    hf.set_adapter(adapter)
    try:
        lora_out = hf.generate(prompts, config)
    finally:
        hf.set_adapter(None)
    assert lora_out != base_out
    assert hf.generate(prompts, config) == base_out  # switching back restores the base model
    merged_backend = get_backend("hf", merged)
    try:
        assert merged_backend.generate(prompts, config) == lora_out
    finally:
        merged_backend.close()


def test_generate_items_with_hf_records_provenance(hf, tiny: Path, tmp_path: Path) -> None:
    items = make_items()
    out = generate_items(tiny, items, backend=hf, config=SHORT, out_path=tmp_path / "g.jsonl", progress=False)
    records = read_jsonl(out, GenerationRecord)
    assert len(records) == len(items)
    assert {r.model_hash for r in records} == {model_hash(tiny)}
    assert {r.backend for r in records} == {"hf"}
    assert records[0].prompt_text.startswith("<|im_start|>user\n" + PROMPTS[0])
    assert records[0].prompt_text.endswith("<|im_start|>assistant\n")
    with pytest.raises(ConfigError, match="backend='hf' but this run has backend='dummy'"):
        generate_items(tiny, items, backend="dummy", config=SHORT, out_path=out, progress=False)


def test_model_hash_is_content_based(tiny: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in tiny.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    assert model_hash(copy) == model_hash(tiny)
    config = json.loads((copy / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (copy / "config.json").write_text(json.dumps(config))
    assert model_hash(copy) != model_hash(tiny)


def test_bad_model_and_adapter_dirs_are_clear_errors(tmp_path: Path, tiny: Path) -> None:
    with pytest.raises(CheckpointError, match=r"config\.json not found"):
        get_backend("hf", tmp_path)
    with pytest.raises(CheckpointError, match=r"adapter_config\.json missing"):
        get_backend("dummy", adapter=tmp_path)
    with pytest.raises(ConfigError, match="needs a model directory"):
        get_backend("hf")


def test_did_you_mean_is_one_spelling_hint() -> None:
    assert did_you_mean("vlm", ["vllm", "hf", "dummy"]) == "did you mean 'vllm'?"
    assert did_you_mean("zzz", ["vllm", "hf"]) == ""
    with pytest.raises(ConfigError, match=r"unknown generation backend 'vlm'; did you mean 'vllm'\?"):
        get_backend("vlm")
