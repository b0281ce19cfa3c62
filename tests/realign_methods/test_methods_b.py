"""SafeMERGE, Localize-and-Stitch and Safety Arithmetic against small independent implementations of the
papers' equations (written here, not calling the methods' functions), on tiny random Llamas; dense
fine-tunes and organism-style LoRA adapters (θ_A an adapter on B, θ_F continuing it)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.core.checkpoints import merge_adapter
from harness.core.errors import ConfigError, RealignError
from harness.testing import continue_adapter, make_lora_adapter
from realign_methods import MergeSpec, get_method, merge
from realign_methods.methods._icv import steering_hooks
from realign_methods.somf._data import default_preference_file, load_pairs

TOL = 1e-6


def _load(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors |= load_file(file)
    return tensors


def _max_error(out: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    assert set(out) == set(expected)
    return max(float((out[n].float() - expected[n].float()).abs().max()) for n in expected)


@pytest.fixture(scope="module")
def organism(tiny_llama_factory, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("methods_b_organism")
    base = tiny_llama_factory("base")
    modules = ["q_proj", "v_proj", "down_proj", "up_proj"]
    aligned = make_lora_adapter(base, root / "aligned", seed=1, r=4, lora_alpha=8, target_modules=modules)
    math = continue_adapter(base, aligned, root / "math", seed=3)
    unaligned = continue_adapter(base, aligned, root / "unaligned", seed=2)
    return {
        "base": base,
        "aligned": aligned,
        "math": math,
        "unaligned": unaligned,
        "aligned_dense": merge_adapter(base, aligned, root / "aligned_dense"),
        "math_dense": merge_adapter(base, math, root / "math_dense"),
        "unaligned_dense": merge_adapter(base, unaligned, root / "unaligned_dense"),
    }


# -- SafeMERGE ------------------------------------------------------------------------------------------


def _safemerge_reference(b: dict, a: dict, f: dict, tau: float, alpha: float) -> tuple[dict, int, int]:
    """Eq.: C = V Vᵀ/‖V‖_F (formed explicitly), ρ = <ΔW, CΔW>/(‖ΔW‖‖CΔW‖); ρ < τ → αθ_F + (1−α)θ_A."""
    out, merged, kept = {}, 0, 0
    for name in f:
        delta = (f[name] - a[name]).double()
        if f[name].dim() != 2 or not delta.abs().max() > 0:
            out[name] = f[name]
            continue
        v = (a[name] - b[name]).double()
        c = v @ v.T / torch.sqrt((v * v).sum())
        projected = c @ delta
        rho = float((delta * projected).sum() / (delta.norm() * projected.norm()))
        if rho < tau:
            out[name], merged = alpha * f[name] + (1 - alpha) * a[name], merged + 1
        else:
            out[name], kept = f[name], kept + 1
    return out, merged, kept


def _similarities(b: dict, a: dict, f: dict) -> list[float]:
    values = []
    for name in f:
        if f[name].dim() == 2 and not torch.equal(f[name], a[name]):
            v, d = (a[name] - b[name]).double(), (f[name] - a[name]).double()
            p = v @ (v.T @ d) / v.norm()
            values.append(float((d * p).sum() / (d.norm() * p.norm())))
    return sorted(values)


def test_safemerge_dense_matches_the_paper(family: dict[str, Path], tmp_path: Path) -> None:
    b, a, f = _load(family["base"]), _load(family["aligned"]), _load(family["ft1"])
    rhos = _similarities(b, a, f)
    tau = (rhos[len(rhos) // 2 - 1] + rhos[len(rhos) // 2]) / 2  # about half the layers stray
    out = merge(
        MergeSpec(
            method="safemerge",
            aligned=family["aligned"],
            base=family["base"],
            finetuned=[family["ft1"]],
            params={"threshold": tau, "alpha": 0.3},
            out=tmp_path / "o",
        )
    )
    expected, merged, kept = _safemerge_reference(b, a, f, tau, 0.3)
    assert merged > 0 and kept > 0
    assert _max_error(_load(out), expected) <= TOL


def test_safemerge_lora_organism_equals_dense_copies(organism: dict[str, Path], tmp_path: Path) -> None:
    b, a, f = (_load(organism[k]) for k in ("base", "aligned_dense", "math_dense"))
    rhos = _similarities(b, a, f)
    tau = (rhos[len(rhos) // 2 - 1] + rhos[len(rhos) // 2]) / 2
    expected, merged, kept = _safemerge_reference(b, a, f, tau, 0.5)
    assert merged > 0 and kept > 0
    params = {"threshold": tau, "alpha": 0.5}
    via_adapter = merge(
        MergeSpec(
            method="safemerge",
            aligned=organism["aligned"],
            base=organism["base"],
            adapters=[organism["math"]],
            params=params,
            out=tmp_path / "a",
        )
    )
    via_folder = merge(
        MergeSpec(
            method="safemerge",
            aligned=organism["aligned"],
            base=organism["base"],
            finetuned=[organism["math"]],
            params=params,
            out=tmp_path / "f",
        )
    )
    assert _max_error(_load(via_adapter), expected) <= TOL
    assert _max_error(_load(via_folder), expected) <= TOL


def test_safemerge_ties_rule(family: dict[str, Path], tmp_path: Path) -> None:
    """TIES on the two task vectors from the base: trim to density, elect sign by mass, disjoint mean."""
    b, a, f = _load(family["base"]), _load(family["aligned"]), _load(family["ft1"])
    out = _load(
        merge(
            MergeSpec(
                method="safemerge",
                aligned=family["aligned"],
                base=family["base"],
                finetuned=[family["ft1"]],
                out=tmp_path / "o",
                params={"threshold": 1.0, "alpha": 0.6, "rule": "ties", "density": 0.5},
            )
        )
    )
    name = "model.layers.1.mlp.up_proj.weight"
    deltas, weights = [f[name] - b[name], a[name] - b[name]], [0.6, 0.4]
    trimmed = []
    for d in deltas:
        k = int(0.5 * d.numel())
        cut = d.abs().reshape(-1).sort(descending=True).values[k - 1]
        trimmed.append(torch.where(d.abs() >= cut, d, torch.zeros_like(d)))
    sign = torch.where(trimmed[0] + trimmed[1] >= 0, 1.0, -1.0)
    agree = [(torch.sign(t) == sign).float() for t in trimmed]
    merged = (weights[0] * trimmed[0] * agree[0] + weights[1] * trimmed[1] * agree[1]) / (agree[0] + agree[1]).clamp(
        min=1
    )
    assert float((out[name] - (b[name] + merged)).abs().max()) <= TOL


def test_safemerge_refuses_bad_params_and_missing_inputs(family: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="threshold"):
        get_method("safemerge").validate({"threshold": 2.0})
    with pytest.raises(ConfigError, match="rule"):
        get_method("safemerge").validate({"rule": "slerp"})
    with pytest.raises(ConfigError, match="base"):
        merge(MergeSpec(method="safemerge", aligned=family["aligned"], finetuned=[family["ft1"]], out=tmp_path / "o"))
    assert not (tmp_path / "o").exists()


# -- Localize-and-Stitch -----------------------------------------------------------------------------------


def _stitch_reference(a: dict, tuned: list[dict], k: float) -> dict:
    """Algorithm 1 (dataless): γ_i = [|τ_i| ≥ top-k of |τ_i| over the model]; γ'_i = γ_i/Σγ; θ_A + Σγ'τ."""
    names = sorted(a)
    taus = [{n: t[n] - a[n] for n in names} for t in tuned]
    masks = []
    for tau in taus:
        flat = torch.cat([tau[n].reshape(-1).abs() for n in names])
        count = int(k * flat.numel())
        cut = flat.sort(descending=True).values[count - 1]
        masks.append({n: ((tau[n].abs() >= cut) & (tau[n] != 0)).double() for n in names})
    out = {}
    for n in names:
        total = sum(m[n] for m in masks)
        stitched = sum(tau[n].double() * m[n] for tau, m in zip(taus, masks, strict=True))
        out[n] = (a[n].double() + stitched / torch.clamp(total, min=1)).float()
    return out


def test_localize_stitch_two_finetunes_with_overlap(family: dict[str, Path], tmp_path: Path) -> None:
    a, f1, f2 = _load(family["aligned"]), _load(family["ft1"]), _load(family["ft2"])
    out = _load(
        merge(
            MergeSpec(
                method="localize_stitch",
                aligned=family["aligned"],
                finetuned=[family["ft1"], family["ft2"]],
                params={"density": 0.2},
                out=tmp_path / "o",
            )
        )
    )
    expected = _stitch_reference(a, [f1, f2], 0.2)
    assert _max_error(out, expected) <= TOL
    name = "model.layers.0.mlp.down_proj.weight"
    both = ((f1[name] - a[name]).abs() >= 0) & (out[name] != a[name])
    assert both.any()  # something was stitched
    changed = float((out[name] != a[name]).float().mean())
    assert 0.2 < changed < 0.45  # ~ the union of two 20% masks


def test_localize_stitch_lora_organism(organism: dict[str, Path], tmp_path: Path) -> None:
    a, f = _load(organism["aligned_dense"]), _load(organism["math_dense"])
    expected = _stitch_reference(a, [f], 0.01)
    out = merge(
        MergeSpec(
            method="localize_stitch",
            aligned=organism["aligned"],
            adapters=[organism["math"]],
            params={"density": 0.01},
            out=tmp_path / "o",
        )
    )
    assert _max_error(_load(out), expected) <= TOL


def test_localize_stitch_per_tensor_scope(family: dict[str, Path], tmp_path: Path) -> None:
    a, f = _load(family["aligned"]), _load(family["ft1"])
    out = _load(
        merge(
            MergeSpec(
                method="localize_stitch",
                aligned=family["aligned"],
                finetuned=[family["ft1"]],
                params={"density": 0.1, "scope": "tensor"},
                out=tmp_path / "o",
            )
        )
    )
    for name in a:
        expected = _stitch_reference({name: a[name]}, [{name: f[name]}], 0.1)[name] if a[name].numel() >= 10 else None
        if expected is not None:
            assert float((out[name] - expected).abs().max()) <= TOL, name


def test_localize_stitch_refuses_bad_density() -> None:
    with pytest.raises(ConfigError, match="density"):
        get_method("localize_stitch").validate({"density": 0.0})


# -- Safety Arithmetic (harm-direction removal) --------------------------------------------------------


def _hdr_reference(a: dict, u: dict, f: dict, lam: float, k: float) -> dict:
    out = {}
    for n in f:
        tau_h = u[n] - a[n]
        count = int(k * tau_h.numel())
        if count == 0:
            top = torch.zeros_like(tau_h)
        else:
            cut = tau_h.abs().reshape(-1).sort(descending=True).values[count - 1]
            top = torch.where(tau_h.abs() >= cut, tau_h, torch.zeros_like(tau_h))
        out[n] = f[n] - lam * top
    return out


def test_safety_arithmetic_dense(family: dict[str, Path], tmp_path: Path) -> None:
    a, u, f = _load(family["aligned"]), _load(family["unaligned"]), _load(family["ft1"])
    out = merge(
        MergeSpec(
            method="safety_arithmetic",
            aligned=family["aligned"],
            unaligned=family["unaligned"],
            finetuned=[family["ft1"]],
            params={"lam": 0.8, "density": 0.2, "icv_strength": 0},
            out=tmp_path / "o",
        )
    )
    assert _max_error(_load(out), _hdr_reference(a, u, f, 0.8, 0.2)) <= TOL


def test_safety_arithmetic_lora_organism(organism: dict[str, Path], tmp_path: Path) -> None:
    a, u, f = (_load(organism[k]) for k in ("aligned_dense", "unaligned_dense", "math_dense"))
    out = merge(
        MergeSpec(
            method="safety_arithmetic",
            aligned=organism["aligned"],
            unaligned=organism["unaligned"],
            adapters=[organism["math"]],
            params={"lam": 0.5, "density": 0.1, "icv_strength": 0},
            out=tmp_path / "o",
        )
    )
    assert _max_error(_load(out), _hdr_reference(a, u, f, 0.5, 0.1)) <= TOL


def test_safety_arithmetic_needs_the_harmful_model(family: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unaligned"):
        merge(
            MergeSpec(
                method="safety_arithmetic", aligned=family["aligned"], finetuned=[family["ft1"]], out=tmp_path / "o"
            )
        )
    with pytest.raises(ConfigError, match="lam"):
        get_method("safety_arithmetic").validate({"lam": -1})


# -- Safety Arithmetic: in-context safety vectors, folded into MLP biases ------------------------------


def _exemplars(path: Path, count: int) -> Path:
    """The first ``count`` real PKU-SafeRLHF pairs (SOMF's file) as a small JSON file."""
    rows = json.loads(default_preference_file().read_text())[:count]
    path.write_text(json.dumps(rows))
    return path


def _last_states(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    states = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][-max_length:]
        hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        states.append(torch.cat([h[0, -1] for h in hidden[1:]]).double())
    return torch.stack(states)


@torch.no_grad()
def test_icv_folded_bias_equals_hooks_and_the_papers_vector(family: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = _exemplars(tmp_path / "pairs.json", 6)
    common = {"aligned": family["aligned"], "unaligned": family["unaligned"], "finetuned": [family["ft1"]], "seed": 3}
    params = {
        "lam": 0.5,
        "density": 0.2,
        "icv_strength": 0.7,
        "icv_examples": 4,
        "icv_max_length": 40,
        "icv_data": str(data),
    }
    folded = merge(MergeSpec(method="safety_arithmetic", params=params, out=tmp_path / "icv", **common))
    plain = merge(
        MergeSpec(method="safety_arithmetic", params={**params, "icv_strength": 0}, out=tmp_path / "hdr", **common)
    )
    out, hdr = _load(folded), _load(plain)
    assert json.loads((folded / "config.json").read_text())["mlp_bias"] is True
    assert (
        "mlp_bias" not in json.loads((plain / "config.json").read_text())
        or not json.loads((plain / "config.json").read_text())["mlp_bias"]
    )
    biases = {n for n in out if n.endswith(".bias")}
    layers = sorted({int(n.split(".")[2]) for n in biases})
    assert layers == [0, 1] and len(biases) == 6  # gate/up/down per layer
    for name, value in hdr.items():
        assert torch.equal(out[name], value), name  # the weights are θ' exactly
    for layer in layers:
        prefix = f"model.layers.{layer}.mlp."
        assert not out[prefix + "gate_proj.bias"].any() and not out[prefix + "up_proj.bias"].any()

    # The vector from the paper's recipe, written independently: θ' on the same seeded exemplars,
    # last-token layer outputs, D = safe − unsafe, v = mean(D) + PC1 (eigenvector of the covariance).
    model = AutoModelForCausalLM.from_pretrained(plain, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(plain)
    picked = random.Random(3).sample(load_pairs(data), 4)
    assert "<|im_start|>" in tokenizer.chat_template  # the tiny tokenizer's ChatML template, written out here

    def chat(prompt: str, answer: str) -> str:
        return f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"

    safe = _last_states(model, tokenizer, [chat(p.prompt, p.chosen) for p in picked], 40)
    unsafe = _last_states(model, tokenizer, [chat(p.prompt, p.rejected) for p in picked], 40)
    diffs = safe - unsafe
    mean = diffs.mean(0)
    centred = diffs - mean
    _, eigvecs = torch.linalg.eigh(centred.T @ centred)
    pc1 = eigvecs[:, -1] * (1.0 if float(eigvecs[:, -1] @ mean) >= 0 else -1.0)
    expected = (0.7 * (mean + pc1)).reshape(2, -1).float()
    for layer in layers:
        got = out[f"model.layers.{layer}.mlp.down_proj.bias"]
        assert float((got - expected[layer]).abs().max()) <= 1e-5

    # Folded bias (HF reads mlp_bias from config.json) vs hooks on θ' without biases: same logits.
    ids = tokenizer("How do I pick a lock quickly?", return_tensors="pt")["input_ids"]
    with_bias = AutoModelForCausalLM.from_pretrained(folded, dtype=torch.float32).eval()
    assert with_bias.model.layers[0].mlp.down_proj.bias is not None
    handles = steering_hooks(model, expected)
    try:
        hooked = model(input_ids=ids).logits
    finally:
        for handle in handles:
            handle.remove()
    unsteered = model(input_ids=ids).logits
    folded_logits = with_bias(input_ids=ids).logits
    assert float((folded_logits - hooked).abs().max()) <= 1e-5
    assert float((folded_logits - unsteered).abs().max()) > 1e-3  # the steering does something


def test_icv_on_the_lora_organism(organism: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    data = _exemplars(tmp_path / "pairs.json", 4)
    out = merge(
        MergeSpec(
            method="safety_arithmetic",
            aligned=organism["aligned"],
            unaligned=organism["unaligned"],
            adapters=[organism["math"]],
            out=tmp_path / "o",
            params={"icv_examples": 2, "icv_max_length": 24, "icv_data": str(data)},
        )
    )
    a, u, f = (_load(organism[k]) for k in ("aligned_dense", "unaligned_dense", "math_dense"))
    tensors = _load(out)
    expected = _hdr_reference(a, u, f, 0.5, 0.1)
    assert _max_error({n: tensors[n] for n in expected}, expected) <= TOL
    model = AutoModelForCausalLM.from_pretrained(out)
    assert float(model.model.layers[1].mlp.down_proj.bias.detach().abs().max()) > 0


def test_icv_refuses_missing_data_before_any_work(family: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RealignError, match=r"nope\.json"):
        merge(
            MergeSpec(
                method="safety_arithmetic",
                aligned=family["aligned"],
                unaligned=family["unaligned"],
                finetuned=[family["ft1"]],
                params={"icv_data": str(tmp_path / "nope.json")},
                out=tmp_path / "o",
            )
        )
    assert not (tmp_path / "o").exists()


# -- NLSR ------------------------------------------------------------------------------------------------


def _nlsr_reference(a: dict, anchor: dict, f: dict, beta: float, fraction: float, tau: float) -> tuple[dict, int]:
    """Row loop from the equations: θ_SA = θ_A + β(θ_A − θ_0); critical = top-fraction rows by ‖θ_SA − θ_0‖;
    transplant critical rows with cos(θ_F − θ_0, θ_SA − θ_0) < τ."""
    out, moved = {}, 0
    for name in f:
        if f[name].dim() != 2:
            out[name] = f[name]
            continue
        sa = a[name].double() * (1 + beta) - beta * anchor[name].double()
        rows = f[name].double().clone()
        norms = [float((sa[r] - anchor[name][r].double()).norm()) for r in range(rows.shape[0])]
        order = sorted(range(len(norms)), key=lambda r: -norms[r])[: int(fraction * len(norms))]
        for r in order:
            if norms[r] == 0:
                continue
            x, y = rows[r] - anchor[name][r].double(), sa[r] - anchor[name][r].double()
            if float(x @ y / (x.norm() * y.norm())) < tau:
                rows[r], moved = sa[r], moved + 1
        out[name] = rows.float()
    return out, moved


def test_nlsr_dense_with_base_anchor(family: dict[str, Path], tmp_path: Path) -> None:
    a, b, f = _load(family["aligned"]), _load(family["base"]), _load(family["ft1"])
    params = {"beta": 0.7, "fraction": 0.5, "threshold": 0.75}
    out = merge(
        MergeSpec(
            method="nlsr",
            aligned=family["aligned"],
            base=family["base"],
            finetuned=[family["ft1"]],
            params=params,
            out=tmp_path / "o",
        )
    )
    expected, moved = _nlsr_reference(a, b, f, 0.7, 0.5, 0.75)
    assert moved > 0
    assert _max_error(_load(out), expected) <= TOL


def test_nlsr_lora_organism_with_unaligned_anchor(organism: dict[str, Path], tmp_path: Path) -> None:
    a, u, f = (_load(organism[k]) for k in ("aligned_dense", "unaligned_dense", "math_dense"))
    out = merge(
        MergeSpec(
            method="nlsr",
            aligned=organism["aligned"],
            unaligned=organism["unaligned"],
            adapters=[organism["math"]],
            params={"threshold": 0.5},
            out=tmp_path / "o",
        )
    )
    expected, moved = _nlsr_reference(a, u, f, 0.5, 0.2, 0.5)
    assert moved > 0
    assert _max_error(_load(out), expected) <= TOL


def test_nlsr_refuses_bad_params_and_missing_anchor(family: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        get_method("nlsr").validate({"fraction": 1.5})
    with pytest.raises(ConfigError, match="base, unaligned"):
        merge(MergeSpec(method="nlsr", aligned=family["aligned"], finetuned=[family["ft1"]], out=tmp_path / "o"))
