"""Safe LoRA with a fine-tune adapter that continues the aligned adapter on the same base (the organism).

Real PEFT adapters on a tiny random Llama: an aligned adapter on q/v/down/k, a fine-tune that continued
it (same modules, factors moved on) and one with another rank layout that drops k and adds o.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.core.checkpoints import CombinedAdapter, LoraAdapter, merge_adapter
from harness.core.errors import CheckpointError, ConfigError
from harness.testing import continue_adapter, make_lora_adapter
from realign_methods import MergeSpec, TensorInputs, merge
from realign_methods.methods.safe_lora import update_factors


def _load(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors |= load_file(file)
    return tensors


@pytest.fixture(scope="module")
def organism(tiny_llama_factory, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("continuing")
    base = tiny_llama_factory("base")
    aligned_adapter = make_lora_adapter(
        base,
        root / "aligned_adapter",
        seed=1,
        r=4,
        lora_alpha=12,
        target_modules=["q_proj", "v_proj", "down_proj", "k_proj"],
    )
    continued = continue_adapter(base, aligned_adapter, root / "continued", seed=2)
    # another rank layout: r=2 (one module r=3), k_proj dropped (aligned only), o_proj added (fine-tune only)
    other_layout = make_lora_adapter(
        base,
        root / "other_layout",
        seed=3,
        r=2,
        lora_alpha=4,
        target_modules=["q_proj", "v_proj", "down_proj", "o_proj"],
        rank_pattern={"layers.1.mlp.down_proj": 3},
    )
    return {
        "base": base,
        "aligned_adapter": aligned_adapter,
        "aligned": merge_adapter(base, aligned_adapter, root / "aligned"),
        "continued": continued,
        "continued_dense": merge_adapter(base, continued, root / "continued_dense"),
        "other_layout": other_layout,
        "other_layout_dense": merge_adapter(base, other_layout, root / "other_layout_dense"),
        "foreign_base": tiny_llama_factory("foreign", hidden_size=32, intermediate_size=64),
    }


def _spec(organism: dict[str, Path], finetune: str, out: Path, output: str = "dense", **params: object) -> MergeSpec:
    return MergeSpec(
        method="safe_lora",
        aligned=organism["aligned"],
        base=organism["base"],
        adapters=[organism[finetune]],
        out=out,
        output=output,  # type: ignore[arg-type]
        params={"aligned_adapter": str(organism["aligned_adapter"]), **params},
    )


def _modules(path: Path) -> set[str]:
    return set(LoraAdapter.load(path).modules())


@pytest.mark.parametrize("finetune", ["continued", "other_layout"])
def test_nothing_projected_gives_the_finetuned_weights(
    organism: dict[str, Path], finetune: str, tmp_path: Path
) -> None:
    out = _load(merge(_spec(organism, finetune, tmp_path / "o", threshold=-1.0)))
    tuned, aligned = _load(organism[f"{finetune}_dense"]), _load(organism["aligned"])
    aligned_only = _modules(organism["aligned_adapter"]) - _modules(organism[finetune])
    assert aligned_only == (
        {"model.layers.0.self_attn.k_proj.weight", "model.layers.1.self_attn.k_proj.weight"}
        if finetune == "other_layout"
        else set()
    )
    for name, value in out.items():
        # θ_A + (θ_F − θ_A) = θ_F; where only the aligned adapter acts, the fine-tune left θ_A alone
        expected = aligned[name] if name in aligned_only else tuned[name]
        assert torch.allclose(value, expected, atol=1e-5), name
    for name in aligned_only:
        assert not torch.allclose(tuned[name], aligned[name], atol=1e-3)  # θ_F (base there) would be wrong
    # the fine-tune's own delta over θ_A would double-count the alignment: the output must not be that
    adapter = LoraAdapter.load(organism[finetune])
    name = "model.layers.0.self_attn.q_proj.weight"
    delta = adapter.delta(name)
    assert delta is not None and not torch.allclose(out[name], aligned[name] + delta, atol=1e-3)


@pytest.mark.parametrize("finetune", ["continued", "other_layout"])
def test_everything_projected_matches_the_dense_projection(
    organism: dict[str, Path], finetune: str, tmp_path: Path
) -> None:
    out_dir = merge(_spec(organism, finetune, tmp_path / "o", num_proj_layers=1000))
    out = _load(out_dir)
    tuned, aligned, base = _load(organism[f"{finetune}_dense"]), _load(organism["aligned"]), _load(organism["base"])
    tuned_modules = _modules(organism[finetune])
    for name, value in out.items():
        if name in tuned_modules:
            v = aligned[name] - base[name]
            norm = torch.linalg.norm(v)  # 0 where only the fine-tune adapts (o_proj): C = 0 there
            c = v @ v.T / norm if norm > 0 else torch.zeros(v.shape[0], v.shape[0])  # formed densely
            expected = aligned[name] + c @ (tuned[name] - aligned[name])
        else:
            expected = aligned[name]
        assert torch.allclose(value, expected, atol=1e-5), name
    provenance = (out_dir / "realign_merge.json").read_text()
    assert str(organism["aligned_adapter"]) in provenance


def test_adapter_output_applies_to_the_base(organism: dict[str, Path], tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    dense = _load(merge(_spec(organism, "continued", tmp_path / "dense", num_proj_layers=4)))
    written = merge(_spec(organism, "continued", tmp_path / "adapter", num_proj_layers=4, output="adapter"))
    ranks = {name: module.rank for name, module in LoraAdapter.load(written).modules().items()}
    assert sorted(ranks.values()) == [4] * (len(ranks) - 4) + [8] * 4  # projected layers: r_A + r_F
    model = AutoModelForCausalLM.from_pretrained(organism["base"], dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, written).merge_and_unload().state_dict()
    for name, value in dense.items():
        assert torch.allclose(merged[name], value, atol=1e-5), name
    with pytest.raises(ConfigError, match=r"k_proj.*output='dense'"):
        merge(_spec(organism, "other_layout", tmp_path / "refused", output="adapter"))
    assert not (tmp_path / "refused").exists()


def test_mismatched_aligned_adapter_is_refused_before_writing(organism: dict[str, Path], tmp_path: Path) -> None:
    foreign = make_lora_adapter(
        organism["foreign_base"], tmp_path / "foreign", seed=4, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]
    )
    spec = _spec(organism, "continued", tmp_path / "o").model_copy(update={"params": {"aligned_adapter": str(foreign)}})
    with pytest.raises(CheckpointError, match=rf"aligned_adapter.*{foreign}.*q_proj.*\[32, 32\]"):
        merge(spec)
    missing = tmp_path / "no_such_adapter"
    with pytest.raises(CheckpointError, match=rf"aligned_adapter.*not found: {missing}"):
        merge(spec.model_copy(update={"params": {"aligned_adapter": str(missing)}}))
    assert not spec.out.exists()


def test_planner_fills_aligned_adapter_only_on_the_same_base(tmp_path: Path) -> None:
    from harness.experiment._plan import ResolvedModel, _method, method_inputs

    base, other = tmp_path / "base", tmp_path / "dense_aligned"
    models = {
        "base": ResolvedModel("base", base, None, "b"),
        "aligned": ResolvedModel("aligned", base, tmp_path / "aligned_lora", "a"),
    }
    on_base = ResolvedModel("finetuned[0]", base, tmp_path / "math_lora", "f")
    on_aligned = ResolvedModel("finetuned[0]", other, tmp_path / "math_lora", "g")
    for name, params in (("safe_lora", {}), ("somf", {"setting": "lora"})):
        method, full = _method(name, params, name)
        _, use_adapter, extra = method_inputs(method, full, models, on_base, name)
        assert use_adapter and extra == {"aligned_adapter": str(tmp_path / "aligned_lora")}
        _, use_adapter, extra = method_inputs(method, full, models, on_aligned, name)
        assert use_adapter and extra == {}
    method, full = _method("safe_lora", {"aligned_adapter": "/given"}, "safe_lora")
    assert method_inputs(method, full, models, on_base, "safe_lora")[2] == {}  # an explicit value wins


def test_difference_adapter_is_the_combined_adapter_where_both_adapt(organism: dict[str, Path]) -> None:
    """Safe LoRA joins θ_F − θ_A as CombinedAdapter does (bit for bit); a weight only one adapter adapts
    keeps Safe LoRA's own rule (the fine-tune's factors, or θ_A: None)."""
    tuned, aligned = LoraAdapter.load(organism["other_layout"]), LoraAdapter.load(organism["aligned_adapter"])
    combined = CombinedAdapter(tuned, [(aligned, -1.0)])
    seen = {"both": 0, "fine-tune only": 0, "aligned only": 0}
    for name in sorted(set(tuned.modules()) | set(aligned.modules())):
        ours = update_factors(name, TensorInputs.from_tensors(name, {}, adapters=[tuned]), aligned)
        if name in tuned.modules() and name in aligned.modules():
            seen["both"] += 1
            assert ours is not None and ours[2] == 1.0
            joined = combined.factors(name)
            assert joined is not None
            assert torch.equal(ours[0], joined[0]) and torch.equal(ours[1], joined[1])
        elif name in tuned.modules():
            seen["fine-tune only"] += 1
            assert ours is not None and ours[2] == tuned.scaling_for(name)
            assert torch.equal(ours[1], tuned.factors(name)[1])  # type: ignore[index]
        else:
            seen["aligned only"] += 1
            assert ours is None and combined.factors(name) is not None
    assert all(seen.values()), seen
