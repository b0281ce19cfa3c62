"""LoRA adapters: real PEFT adapters on tiny models, checked against peft's own merge_and_unload."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from harness.core.checkpoints import CheckpointReader, LoraAdapter, lora_delta, merge_adapter, save_adapter
from harness.core.errors import CheckpointError
from realign_methods import TensorInputs


def _make_peft_adapter(base: Path, out: Path, seed: int = 0, **lora_kwargs) -> Path:
    """Train-free PEFT LoRA with random (non-zero) A and B, saved with peft's save_pretrained."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(init_lora_weights=False, **lora_kwargs)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out)
    return out


def _peft_merged_state(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return {k: v.detach() for k, v in merged.state_dict().items()}


def _max_diff(ours: Path, reference: dict[str, torch.Tensor]) -> float:
    reader = CheckpointReader(ours)
    worst = 0.0
    for name in reader.names():
        worst = max(worst, (reader.get(name).float() - reference[name].float()).abs().max().item())
    return worst


@pytest.fixture(scope="module")
def llama_adapter(tiny_llama_factory, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tiny_llama_factory("base")
    adapter = _make_peft_adapter(
        base,
        tmp_path_factory.mktemp("lora") / "adapter",
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "up_proj", "embed_tokens"],
        rank_pattern={"layers.1.self_attn.q_proj": 2},
        alpha_pattern={"up_proj": 3},
    )
    return base, adapter


def test_adapter_metadata_and_modules(llama_adapter) -> None:
    base, adapter_dir = llama_adapter
    adapter = LoraAdapter.load(adapter_dir)
    assert adapter.rank == 4 and adapter.alpha == 8 and adapter.scaling == 2.0
    assert adapter.base_model == str(base)
    modules = adapter.modules()
    assert "model.layers.0.self_attn.q_proj.weight" in modules
    assert "model.embed_tokens.weight" in modules and modules["model.embed_tokens.weight"].embedding
    assert len(modules) == 2 * 3 + 1
    assert modules["model.layers.1.self_attn.q_proj.weight"].rank == 2
    assert adapter.scaling_for("model.layers.1.self_attn.q_proj.weight") == 4.0
    assert adapter.scaling_for("model.layers.0.mlp.up_proj.weight") == 0.75
    reader = CheckpointReader(base)
    adapter.check_base(reader)
    for name in modules:
        lora_a, lora_b = adapter.factors(name)
        assert lora_a.dtype == torch.float32 and lora_b.shape[1] == lora_a.shape[0]
        assert adapter.delta(name).shape == reader.shape(name)
    assert adapter.factors("model.norm.weight") is None and adapter.delta("model.norm.weight") is None


def test_one_lora_delta_formula_for_adapters_and_methods(llama_adapter) -> None:
    """LoraAdapter.delta and the methods' TensorInputs.adapter_delta are lora_delta, bit for bit."""
    _, adapter_dir = llama_adapter
    adapter = LoraAdapter.load(adapter_dir)
    for name in adapter.modules():
        lora_a, lora_b = adapter.factors(name)
        scaling = adapter.scaling_for(name)
        expected = (lora_b.double() @ lora_a.double()) * scaling  # the formula itself, in float64
        delta = adapter.delta(name)
        assert torch.equal(delta, lora_delta(lora_a, lora_b, scaling))
        assert torch.allclose(delta.double(), expected, atol=1e-6)
        inputs = TensorInputs.from_tensors(name, {}, adapters=[adapter])
        assert torch.equal(inputs.adapter_delta(0), delta)
        rows = slice(1, 3)
        assert torch.equal(inputs.adapter_delta(0, rows), lora_delta(lora_a, lora_b, scaling, rows))
        assert torch.allclose(inputs.adapter_delta(0, rows), delta[rows], atol=1e-6)
    assert TensorInputs.from_tensors("model.norm.weight", {}, adapters=[adapter]).adapter_delta(0) is None


def test_merge_adapter_matches_peft_merge_and_unload(llama_adapter, tmp_path: Path) -> None:
    base, adapter = llama_adapter
    out = merge_adapter(base, adapter, tmp_path / "merged")
    assert _max_diff(out, _peft_merged_state(base, adapter)) <= 1e-6
    assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()
    provenance = json.loads((out / "realign_merge.json").read_text())
    assert provenance["method"] == "merge_adapter" and "base/model.safetensors" in provenance["input_sha256"]
    # The merge actually changed the adapted weights and nothing else.
    merged, original = CheckpointReader(out), CheckpointReader(base)
    changed = {n for n in original.names() if not torch.equal(merged.get(n), original.get(n))}
    assert changed == set(LoraAdapter.load(adapter).modules())


def test_rslora_and_fan_in_fan_out_match_peft(tmp_path: Path) -> None:
    """GPT-2 stores Conv1D weights as [in, out] (fan_in_fan_out); rsLoRA scales by alpha/sqrt(r)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    base = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=128, n_positions=64)).save_pretrained(base)
    adapter_dir = _make_peft_adapter(
        base,
        tmp_path / "adapter",
        r=4,
        lora_alpha=16,
        use_rslora=True,
        target_modules=["c_attn", "c_fc"],
        fan_in_fan_out=True,
    )
    adapter = LoraAdapter.load(adapter_dir)
    assert adapter.scaling == 8.0
    out = merge_adapter(base, adapter, tmp_path / "merged")
    reference = _peft_merged_state(base, adapter_dir)
    assert _max_diff(out, {k: v for k, v in reference.items() if k != "lm_head.weight"}) <= 1e-6


def test_save_adapter_round_trip_loads_in_peft(llama_adapter, tmp_path: Path) -> None:
    base, adapter_dir = llama_adapter
    adapter = LoraAdapter.load(adapter_dir)
    # Halve every B (as a factor-space method would edit it) and drop one rank of one module.
    factors = {name: (a, b * 0.5) for name, (a, b) in ((n, adapter.factors(n)) for n in adapter.modules())}
    name = "model.layers.0.self_attn.v_proj.weight"
    a, b = factors[name]
    factors[name] = (a[:3], b[:, :3])
    out = save_adapter(factors, adapter, tmp_path / "edited")
    edited = LoraAdapter.load(out)
    assert edited.modules()[name].rank == 3
    for weight_name, (a, b) in factors.items():
        expected = b @ a * adapter.scaling_for(weight_name) if weight_name != name else b @ a * adapter.alpha / 3
        assert torch.allclose(edited.delta(weight_name), expected, atol=1e-6)
    merged = merge_adapter(base, out, tmp_path / "merged")
    assert _max_diff(merged, _peft_merged_state(base, out)) <= 1e-6


def test_adapter_whose_base_does_not_match(llama_adapter, tiny_llama_factory, tmp_path: Path) -> None:
    _, adapter = llama_adapter
    wider = tiny_llama_factory("wide", hidden_size=96, num_heads=4, num_kv_heads=2)
    with pytest.raises(
        CheckpointError,
        match=r"module 'model\.embed_tokens' expects 'model\.embed_tokens\.weight' of shape \[\d+, 64\], the base has \[\d+, 96\]",
    ):
        merge_adapter(wider, adapter, tmp_path / "never")
    assert not (tmp_path / "never").exists() and os.listdir(tmp_path) == []
    shallow = tiny_llama_factory("shallow", num_layers=1)
    with pytest.raises(CheckpointError, match=r"module 'model\.layers\.1\.[a-z_.]+' expects .* which the base lacks"):
        LoraAdapter.load(adapter).check_base(CheckpointReader(shallow))


def test_bad_adapter_inputs(tmp_path: Path, llama_adapter) -> None:
    with pytest.raises(CheckpointError, match=re.escape(f"adapter not found: {tmp_path / 'none'}")):
        LoraAdapter.load(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"adapter_config\.json missing"):
        LoraAdapter.load(tmp_path / "empty")
    _, adapter = llama_adapter
    dora = tmp_path / "dora"
    dora.mkdir()
    config = json.loads((adapter / "adapter_config.json").read_text()) | {"use_dora": True}
    (dora / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="DoRA"):
        LoraAdapter.load(dora)


def test_modules_to_save_matches_peft(tiny_llama_factory, tmp_path: Path) -> None:
    """A fully trained module saved with the adapter (modules_to_save) replaces the base tensor."""
    from peft import PeftModel

    base = tiny_llama_factory("base")
    adapter_dir = _make_peft_adapter(
        base, tmp_path / "adapter", r=2, target_modules=["k_proj"], modules_to_save=["lm_head"]
    )
    # Give the saved lm_head a change of its own, through peft, so the replacement is visible.
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_dir, is_trainable=True)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "modules_to_save" in name:
                param.add_(0.5)
    model.save_pretrained(adapter_dir)
    adapter = LoraAdapter.load(adapter_dir)
    assert set(adapter.replacements()) == {"lm_head.weight"}
    out = merge_adapter(base, adapter, tmp_path / "merged")
    reference = _peft_merged_state(base, adapter_dir)
    assert _max_diff(out, reference) <= 1e-6
    assert not torch.equal(CheckpointReader(out).get("lm_head.weight"), CheckpointReader(base).get("lm_head.weight"))
