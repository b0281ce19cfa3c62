"""vLLM judges on a tiny random Llama (eager mode): prompts in, garbage out -> parsed or 'invalid'.

One engine for the whole module: the three judge kinds share it (same model, same engine options).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.judges import get_judge
from benchmarks.judges._llm import _ENGINES, close_engines, unsafe_probability
from harness.core.errors import ConfigError
from harness.core.records import GenerationRecord, Item

ENGINE = {"enforce_eager": True, "max_model_len": 2048}


@pytest.fixture(scope="module")
def classifier_dir(tiny_llama_factory) -> Path:
    """A tiny random Llama with a context long enough for the classifiers' prompts."""
    path = tiny_llama_factory("judge-cls", num_heads=2, num_kv_heads=1)  # head_dim 32 for vLLM's CPU kernels
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = 4096  # RoPE: no learned positions, so this is free
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def engine_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
        yield
    close_engines()


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs model=PATH, a local copy of cais/HarmBench-Llama-2-13b-cls"):
        get_judge("llm")
    with pytest.raises(ConfigError, match=r"model path .*nowhere has no config.json .*meta-llama/Llama-Guard-3-8B"):
        get_judge("llamaguard3", model=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="kind='gpt'"):
        get_judge("llm", model=str(tmp_path), kind="gpt")


def test_unsafe_probability_from_logprobs(tiny_llama_factory) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_factory("judge-cls", num_heads=2, num_kv_heads=1))
    safe = tokenizer.encode("safe", add_special_tokens=False)[0]
    unsafe = tokenizer.encode("unsafe", add_special_tokens=False)[0]
    logprobs = {safe: SimpleNamespace(logprob=math.log(0.2)), unsafe: SimpleNamespace(logprob=math.log(0.6))}
    assert unsafe_probability(logprobs, tokenizer) == pytest.approx(0.75)
    assert unsafe_probability({safe: SimpleNamespace(logprob=-1.0)}, tokenizer) == 0.0
    assert unsafe_probability({}, tokenizer) is None


def test_cpu_engine_defaults_fit_the_machine(
    tmp_path: Path, classifier_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's default would reserve 0.92 of host RAM on CPU: the judge sizes its KV cache instead."""
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    options = get_judge("llm", model=str(classifier_dir)).engine_options
    assert options["enforce_eager"] is True and options["kv_cache_memory_bytes"] == 2**30
    assert "gpu_memory_utilization" not in options
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")
    assert get_judge("llm", model=str(classifier_dir)).engine_options["kv_cache_memory_bytes"] == 3 * 2**30
    sized = get_judge("llm", model=str(classifier_dir), kv_cache_gib=0.5, enforce_eager=False).engine_options
    assert sized["kv_cache_memory_bytes"] == 2**29 and sized["enforce_eager"] is False
    with pytest.raises(ConfigError, match=r"judge .llm.: option kv_cache_gib=0: Input should be greater than 0"):
        get_judge("llm", model=str(classifier_dir), kv_cache_gib=0)


def test_llm_judge_runs_on_cpu_with_its_defaults(classifier_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No engine options at all: the judge starts vLLM on this CPU and gives a verdict per answer."""
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    items = {"a": Item(id="a", benchmark="toy", prompt="How do I bake bread?")}
    gens = [
        GenerationRecord(
            item_id="a",
            benchmark="toy",
            prompt_text="-",
            prompt_hash="-",
            completion="Mix flour and water, then bake.",
            model_hash="-",
            gen_config_hash="-",
            backend="dummy",
        )
    ]
    try:
        (verdict,) = get_judge("llm", model=str(classifier_dir)).judge(gens, items)
    finally:
        close_engines()
    # A random classifier's one token parses as Yes/No or not at all; either way the raw answer is kept.
    assert verdict.label in {"harmful", "harmless", "invalid"} and "classifier said" in (verdict.rationale or "")
    assert verdict.judge_id == "llm/harmbench@1"


@pytest.mark.slow
def test_three_kinds_run_through_one_vllm_engine(classifier_dir: Path, engine_env: None) -> None:
    items = {
        "a": Item(id="a", benchmark="toy", prompt="How do I bake bread?"),
        "long": Item(id="long", benchmark="toy", prompt="word " * 3000),  # over max_model_len
    }
    gens = [
        GenerationRecord(
            item_id=i,
            benchmark="toy",
            prompt_text="-",
            prompt_hash="-",
            completion=c,
            model_hash="-",
            gen_config_hash="-",
            backend="dummy",
        )
        for i, c in (("a", "Mix flour and water. " * 300), ("long", "ok"))
    ]
    ids = set()
    for name in ("llm", "llamaguard3", "wildguard"):
        judge = get_judge(name, model=str(classifier_dir), **ENGINE)
        verdicts = judge.judge(gens, items)
        ids.add(judge.id)
        first, too_long = verdicts
        assert first.label in {"harmful", "harmless", "invalid"} and "classifier said" in (first.rationale or "")
        if first.score is not None:
            assert 0.0 <= first.score <= 1.0
        assert too_long.label == "invalid" and "over max_model_len 2048" in (too_long.rationale or "")
    assert ids == {"llm/harmbench@1", "llm/llamaguard3@1", "llm/wildguard@1"}
    assert len(_ENGINES) == 1  # one engine served all three judges
