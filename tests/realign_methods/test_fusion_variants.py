"""The generalized task-arithmetic variants against the formulas they replaced, and mergekit parity."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from harness.core.errors import ConfigError
from realign_methods import MergeSpec, get_method, merge, mergekit_fields, ops
from realign_methods._method import TensorContext, TensorInputs
from realign_methods.methods.fusion import FUSION_VARIANTS
from tests.cli import run

# mergekit lives in its own venv (perf/merge_bench.py's docstring says how to make one) so it can
# never replace this project's torch; $REALIGN_MERGEKIT_PYTHON points elsewhere.
MERGEKIT_PYTHON = Path(
    os.environ.get("REALIGN_MERGEKIT_PYTHON")
    or Path(__file__).resolve().parents[2] / ".cache" / "mergekit-venv" / "bin" / "python"
)
needs_mergekit = pytest.mark.skipif(
    not MERGEKIT_PYTHON.exists(), reason=f"mergekit 0.1.5 venv not found at {MERGEKIT_PYTHON} (CI has no mergekit)"
)

# --- the formulas the variants replaced, written out (whole tensors; chunking is elementwise) ---


def _old_task_arithmetic(anchor: torch.Tensor, models: list[torch.Tensor], p: dict, name: str) -> torch.Tensor:
    deltas = [m - anchor for m in models]
    total = deltas[0] * p["lam"]
    for delta in deltas[1:]:
        total = total + delta * p["lam"]
    return anchor + total


def _old_weight_average(anchor: torch.Tensor, models: list[torch.Tensor], p: dict, name: str) -> torch.Tensor:
    weights = p.get("weights") or [1.0] * len(models)
    norm = sum(weights)
    deltas = [m - anchor for m in models]
    total = deltas[0] * (weights[0] / norm)
    for delta, weight in zip(deltas[1:], weights[1:], strict=True):
        total = total + delta * (weight / norm)
    return anchor + total


def _old_magnitude_prune(anchor: torch.Tensor, models: list[torch.Tensor], p: dict, name: str) -> torch.Tensor:
    kept = [ops.apply_threshold(m - anchor, ops.magnitude_threshold(m - anchor, p["density"])) for m in models]
    return anchor + ops.weighted_sum(kept, [p["lam"]] * len(kept))


def _old_ties(anchor: torch.Tensor, models: list[torch.Tensor], p: dict, name: str) -> torch.Tensor:
    deltas = [m - anchor for m in models]
    thresholds = [ops.magnitude_threshold(d, p["density"]) for d in deltas]
    return anchor + ops.trim_elect_merge(deltas, thresholds, [p["lam"]] * len(deltas), p["reduce"])


# DARE's masks are the seeded per-(tensor, task) draw (ops.dare(seed=, task=)), not the pre-refactor
# single torch generator: the draw changed on purpose so the fused kernel can draw chunks in parallel.
def _old_dare(anchor: torch.Tensor, models: list[torch.Tensor], p: dict, name: str) -> torch.Tensor:
    seed = TensorContext(name, 7).rng_seed
    total = anchor
    for task, model in enumerate(models):
        total = total + ops.dare(model - anchor, p["p"], seed=seed, task=task) * p["lam"]
    return total


def _dare_ties(anchor: torch.Tensor, models: list[torch.Tensor], p: dict, name: str) -> torch.Tensor:
    seed = TensorContext(name, 7).rng_seed
    dropped = [ops.dare(m - anchor, p["p"], seed=seed, task=task) for task, m in enumerate(models)]
    weights = [p["lam"]] * len(dropped)
    return anchor + ops.trim_elect_merge(dropped, [None] * len(dropped), weights, p["reduce"])


Formula = Callable[[torch.Tensor, list[torch.Tensor], dict, str], torch.Tensor]
PRE_REFACTOR: dict[str, tuple[Formula, dict]] = {
    "task_arithmetic": (_old_task_arithmetic, {"lam": 0.7}),
    "weight_average": (_old_weight_average, {"weights": [0.2, 0.5, 1.3]}),
    "magnitude_prune": (_old_magnitude_prune, {"density": 0.3, "lam": 0.9}),
    "ties": (_old_ties, {"density": 0.3, "lam": 0.9, "reduce": "mean"}),
    "dare": (_old_dare, {"p": 0.4, "lam": 0.8}),
    "dare_ties": (_dare_ties, {"p": 0.4, "lam": 0.8, "reduce": "sum"}),
}


def test_every_non_mergekit_variant_has_a_reference_formula() -> None:
    assert {n for n, r in FUSION_VARIANTS.items() if not r.mergekit} == set(PRE_REFACTOR)


@pytest.mark.parametrize("name", sorted(PRE_REFACTOR))
@pytest.mark.parametrize("shape", [(33, 17), (5,), ()])
def test_variant_is_bit_identical_to_its_formula_on_random_tensors(name: str, shape: tuple[int, ...]) -> None:
    formula, params = PRE_REFACTOR[name]
    generator = torch.Generator().manual_seed(sum(map(ord, name)) + len(shape))
    anchor = torch.randn(shape, generator=generator)
    models = [anchor + 0.1 * torch.randn(shape, generator=generator) for _ in range(3)]
    method = get_method(name)
    inputs = TensorInputs.from_tensors("w", {"aligned": anchor, "finetuned": models})
    ours = method.merge_tensor(inputs, method.validate(params), TensorContext("w", 7, out_dtype=torch.float32))
    assert torch.equal(ours, formula(anchor, models, params, "w"))


def test_ties_sum_and_weight_average_uniform_are_bit_identical() -> None:
    anchor = torch.randn(40, 9, generator=torch.Generator().manual_seed(3))
    models = [anchor + torch.randn(40, 9, generator=torch.Generator().manual_seed(s)) for s in (4, 5)]
    inputs = TensorInputs.from_tensors("w", {"base": anchor, "finetuned": models})
    ctx = TensorContext("w", 7, out_dtype=torch.float32)
    for name, params in (("ties", {"density": 0.5, "lam": 0.4, "reduce": "sum"}), ("weight_average", {})):
        method = get_method(name)
        ours = method.merge_tensor(inputs, method.validate(params), ctx)
        assert torch.equal(ours, PRE_REFACTOR[name][0](anchor, models, params, "w"))


def test_dare_linear_is_dare() -> None:
    assert type(get_method("dare_linear")) is type(get_method("dare"))


@pytest.mark.parametrize("name", sorted(PRE_REFACTOR))
def test_variant_through_the_engine_equals_its_formula(name: str, family: dict[str, Path], tmp_path: Path) -> None:
    formula, params = PRE_REFACTOR[name]
    models = [family["ft1"], family["ft2"]]
    spec_params = {**params, "weights": [0.3, 1.1]} if name == "weight_average" else params
    out = merge(
        MergeSpec(
            method=name, aligned=family["aligned"], finetuned=models, params=spec_params, out=tmp_path / "out", seed=7
        )
    )
    merged = load_file(out / "model.safetensors")
    aligned = load_file(family["aligned"] / "model.safetensors")
    fts = [load_file(m / "model.safetensors") for m in models]
    for tensor_name, tensor in merged.items():
        expected = formula(
            aligned[tensor_name].float(), [f[tensor_name].float() for f in fts], spec_params, tensor_name
        )
        assert torch.equal(tensor, expected.to(tensor.dtype)), tensor_name


def test_task_arithmetic_rows_is_the_weighted_sum_and_checks_lengths() -> None:
    base = torch.randn(3, 300_000, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    models = [(base.float() + 0.01 * i).to(torch.bfloat16) for i in range(1, 4)]
    expected = base.float() + ops.weighted_sum([m.float() - base.float() for m in models], [0.5, -1.0, 2.0])
    assert torch.equal(ops.task_arithmetic_rows(base, models, [0.5, -1.0, 2.0]), expected)
    with pytest.raises(ConfigError, match="models/weights"):
        ops.task_arithmetic_rows(base, models, [1.0])


def test_weight_average_refuses_bad_weights_before_any_work() -> None:
    method = get_method("weight_average")
    inputs = TensorInputs.from_tensors("w", {"aligned": torch.zeros(3), "finetuned": [torch.ones(3), torch.ones(3)]})
    ctx = TensorContext("w", 0)
    with pytest.raises(ConfigError, match="'weights': expected one value per task vector"):
        method.merge_tensor(inputs, method.validate({"weights": [1.0]}), ctx)
    with pytest.raises(ConfigError, match="sum to 0"):
        method.merge_tensor(inputs, method.validate({"weights": [1.0, -1.0]}), ctx)


# --- mergekit semantics on our ops alone (each documented difference; runs in CI) ---


def test_mergekit_magnitude_keeps_exactly_k_even_with_ties() -> None:
    tied = torch.tensor([1.0, -1.0, 1.0, 0.5])
    assert int((ops.mergekit_magnitude(tied, 0.25) != 0).sum()) == 1  # ours keeps all three tied entries
    assert int((ops.magnitude_prune(tied, 0.25) != 0).sum()) == 3
    assert int((ops.mergekit_magnitude(torch.tensor([3.0, -1.0, 2.0]), 0.2) != 0).sum()) == 1  # max(1, k)
    assert torch.equal(ops.mergekit_magnitude(tied, 0.0), torch.zeros(4))


def test_mergekit_elects_on_weighted_mass_and_normalises_by_weight() -> None:
    # +1 and −0.6 with weights 1 and 2: weighted mass −0.2 elects − (ours: unweighted +0.4 elects +)
    merged = ops.mergekit_combine(
        [torch.tensor([1.0]), torch.tensor([-0.6])], [1.0, 2.0], consensus=True, normalize=True
    )
    assert float(merged) == pytest.approx(-0.6)
    # Σ w·δ·agree / Σ w·agree = (2·1 + 1·3) / 3 (ours divides by the agreeing count: 2.5)
    merged = ops.mergekit_combine(
        [torch.tensor([1.0]), torch.tensor([3.0])], [2.0, 1.0], consensus=True, normalize=True
    )
    assert float(merged) == pytest.approx(5.0 / 3.0)
    # no consensus, no normalize, lambda last
    merged = ops.mergekit_combine(
        [torch.tensor([1.0]), torch.tensor([3.0])], [2.0, 1.0], consensus=False, normalize=False, lam=0.5
    )
    assert float(merged) == pytest.approx(2.5)


def test_mergekit_dare_rescales_to_the_l1_norm_not_by_one_over_density() -> None:
    delta = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    ours = ops.mergekit_random(delta, 0.3, torch.Generator().manual_seed(2))
    kept = ours != 0
    assert float(ours.abs().sum()) == pytest.approx(float(delta.abs().sum()), rel=1e-5)
    scale = float(ours[kept][0] / delta[kept][0])
    assert scale != pytest.approx(1 / 0.3, rel=1e-3)
    # the same keep mask as DARE with p = 1 − density from the same seed
    assert torch.equal(kept, ops.dare(delta, 0.7, torch.Generator().manual_seed(2)) != 0)


def test_mergekit_variant_needs_one_value_per_task() -> None:
    method = get_method("ties_mergekit")
    inputs = TensorInputs.from_tensors("w", {"base": torch.zeros(3), "finetuned": [torch.ones(3), torch.ones(3)]})
    with pytest.raises(ConfigError, match="'density': expected one value per task vector"):
        method.merge_tensor(inputs, method.validate({"density": [0.5, 0.5, 0.5]}), TensorContext("w", 0))


_MERGEKIT_OPS = textwrap.dedent("""
    import json, sys
    import torch
    from safetensors.torch import load_file, save_file
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask
    from mergekit.sparsify import RescaleNorm, SparsificationMethod, sparsify
    cfg = json.loads(sys.argv[1]); t = load_file(sys.argv[2])
    base, models = t["base"], [t[f"m{i}"] for i in range(cfg["n"])]
    deltas = []
    for m, d in zip(models, cfg["density"]):
        delta = m - base
        if cfg["sparsify"]:
            if cfg["sparsify"] == "random":
                torch.manual_seed(cfg["seed"])
            delta = sparsify(delta, density=d, method=SparsificationMethod(cfg["sparsify"]),
                             rescale_norm=RescaleNorm.l1 if cfg["rescale"] else None)
        deltas.append(delta)
    deltas = torch.stack(deltas)
    w = torch.tensor(cfg["weights"]).reshape(-1, *([1] * base.dim()))
    deltas = deltas * w
    if cfg["consensus"]:
        mask = get_mask(deltas, method="sum", mask_dtype=deltas.dtype)
        mixed = (deltas * mask).sum(0); div = (w * mask).sum(0); div[div == 0] = 1
    else:
        mixed = deltas.sum(0); div = w.sum(0); div[div.abs() < 1e-8] = 1
    if cfg["normalize"]:
        mixed = mixed / div
    save_file({"out": base + mixed * cfg["lam"]}, sys.argv[3])
""")


@needs_mergekit
@pytest.mark.parametrize("sparsify", ["magnitude", None, "random"])
@pytest.mark.parametrize("consensus", [True, False])
def test_mergekit_ops_equal_mergekit_sparsify_and_get_mask(
    sparsify: str | None, consensus: bool, tmp_path: Path
) -> None:
    """mergekit's own sparsify() and get_mask() composed as its merge_group does, vs our ops (fp32)."""
    generator = torch.Generator().manual_seed(11)
    base = torch.randn(64, 48, generator=generator)
    models = [base + torch.randint(-3, 4, (64, 48), generator=generator).float() * 0.01 for _ in range(3)]  # many ties
    cfg = {
        "n": 3,
        "density": [0.2, 0.5, 0.35],
        "weights": [1.0, 0.6, 1.4],
        "lam": 0.8,
        "sparsify": sparsify,
        "rescale": sparsify == "random",
        "consensus": consensus,
        "normalize": consensus,
        "seed": 5,
    }
    save_file({"base": base, **{f"m{i}": m for i, m in enumerate(models)}}, tmp_path / "in.safetensors")
    subprocess.run(
        [
            str(MERGEKIT_PYTHON),
            "-c",
            _MERGEKIT_OPS,
            json.dumps(cfg),
            str(tmp_path / "in.safetensors"),
            str(tmp_path / "out.safetensors"),
        ],
        check=True,
    )
    theirs = load_file(tmp_path / "out.safetensors")["out"]
    sparse = []
    for model, density in zip(models, cfg["density"], strict=True):
        delta = model - base
        if sparsify == "magnitude":
            delta = ops.mergekit_magnitude(delta, density)
        elif sparsify == "random":
            # mergekit draws from torch's global RNG reseeded per model here; a generator with that seed draws alike
            delta = ops.mergekit_random(delta, density, torch.Generator().manual_seed(5), rescale=True)
        sparse.append(delta)
    ours = base + ops.mergekit_combine(sparse, cfg["weights"], consensus=consensus, normalize=consensus, lam=0.8)
    assert float((ours - theirs).abs().max()) <= 1e-6


# --- `realign merge --mergekit-config` ---


def _write_yaml(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def _mergekit_config(family: dict[str, Path], method: str) -> dict:
    per_model = [{"weight": 1.0, "density": 0.3}, {"weight": 0.6, "density": 0.5}]
    if method in ("linear", "task_arithmetic"):
        per_model = [{"weight": w["weight"]} for w in per_model]
    config: dict = {
        "merge_method": method,
        "dtype": "float32",
        "models": [{"model": str(family["base"])}] if method != "linear" else [],
    }
    config["models"] += [
        {"model": str(family[k]), "parameters": p} for k, p in zip(("ft1", "ft2"), per_model, strict=True)
    ]
    if method != "linear":
        config["base_model"] = str(family["base"])
        config["parameters"] = {"lambda": 0.9, "int8_mask": True}
    return config


def test_mergekit_config_maps_to_the_mergekit_variant(family: dict[str, Path], tmp_path: Path) -> None:
    fields, warnings = mergekit_fields(_write_yaml(tmp_path / "m.yaml", _mergekit_config(family, "ties")))
    assert fields == {
        "method": "ties_mergekit",
        "base": str(family["base"]),
        "finetuned": [str(family["ft1"]), str(family["ft2"])],
        "params": {"lam": 0.9, "weights": [1.0, 0.6], "density": [0.3, 0.5]},
        "dtype": "float32",
    }
    assert any("int8_mask is ignored" in w for w in warnings)
    linear, _ = mergekit_fields(_write_yaml(tmp_path / "l.yaml", _mergekit_config(family, "linear")))
    assert linear["method"] == "weight_average" and linear["aligned"] == str(family["ft1"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"merge_method": "slerp"}, "merge_method 'slerp' is not supported"),
        ({"slices": []}, "field 'slices' is not supported"),
        ({"parameters": {"normalize": [0.1, 0.2]}}, "parameters.normalize: expected a boolean"),
        ({"parameters": {"epsilon": 0.1}}, "parameters.epsilon is not supported for ties"),
        ({"base_model": None}, "base_model: ties needs the base model's path"),
        ({"models": "x"}, "models: expected a non-empty list"),
        ({"dtype": "int8"}, "dtype 'int8' is not supported"),
    ],
)
def test_mergekit_config_errors_name_the_field(
    change: dict, message: str, family: dict[str, Path], tmp_path: Path
) -> None:
    config = {**_mergekit_config(family, "ties"), **change}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        mergekit_fields(_write_yaml(tmp_path / "m.yaml", config))


def test_mergekit_config_per_model_errors(family: dict[str, Path], tmp_path: Path) -> None:
    config = _mergekit_config(family, "ties")
    config["models"][1]["parameters"] = {"weight": [0.1, 0.9], "density": 0.3}
    with pytest.raises(ConfigError, match=r"models\[1\]\.parameters\.weight: expected a number"):
        mergekit_fields(_write_yaml(tmp_path / "m.yaml", config))
    config["models"][1]["parameters"] = {"density": 0.3, "gamma": 0.1}
    with pytest.raises(ConfigError, match=r"models\[1\]\.parameters\.gamma is not supported"):
        mergekit_fields(_write_yaml(tmp_path / "m.yaml", config))
    config["models"][1]["parameters"] = {"density": 0.3}
    with pytest.raises(ConfigError, match=r"models\[1\]\.parameters\.weight is required"):
        mergekit_fields(_write_yaml(tmp_path / "m.yaml", config))


def test_cli_mergekit_config_refuses_clashing_options(
    family: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_yaml(tmp_path / "m.yaml", _mergekit_config(family, "ties"))
    code, _, err = run(["merge", "--mergekit-config", str(path), "-m", "ties", "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "drop --method" in err


_MERGEKIT_RUN = textwrap.dedent("""
    import sys, yaml
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    config = MergeConfiguration.model_validate(yaml.safe_load(open(sys.argv[1])))
    run_merge(config, sys.argv[2], options=MergeOptions(copy_tokenizer=False, lazy_unpickle=False))
""")


@needs_mergekit
@pytest.mark.parametrize("method", ["ties", "task_arithmetic", "linear", "dare_ties"])
def test_cli_mergekit_config_equals_mergekit(
    method: str, family: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _mergekit_config(family, method)
    if method == "dare_ties":  # random drops cannot match mergekit's global RNG; density 1 checks the rest
        for model in config["models"][1:]:
            model["parameters"]["density"] = 1.0
    path = _write_yaml(tmp_path / "m.yaml", config)
    code, _, err = run(["merge", "--mergekit-config", str(path), "--out", str(tmp_path / "ours")], capsys)
    assert code == 0, err
    subprocess.run([str(MERGEKIT_PYTHON), "-c", _MERGEKIT_RUN, str(path), str(tmp_path / "theirs")], check=True)
    ours = load_file(tmp_path / "ours" / "model.safetensors")
    theirs: dict[str, torch.Tensor] = {}
    for file in (tmp_path / "theirs").glob("*.safetensors"):
        theirs |= load_file(file)
    assert set(ours) == set(theirs)
    for name, tensor in ours.items():
        assert tensor.dtype == theirs[name].dtype == torch.float32
        assert float((tensor - theirs[name]).abs().max()) <= 1e-6, name


def test_fuse_deltas_dare_ties_is_differentiable_and_matches_the_engine_variant() -> None:
    """SOMF's differentiable path (fuse_deltas) and the engine's dare_ties agree, and gradients flow."""
    generator = torch.Generator().manual_seed(8)
    anchor = torch.randn(12, 10, generator=generator)
    leaves = [(0.1 * torch.randn(12, 10, generator=generator)).requires_grad_() for _ in range(2)]
    params = {"p": 0.4, "lam": 0.8, "reduce": "sum"}
    fused = ops.fuse_deltas("dare_ties", leaves, params, seed=TensorContext("w", 7).rng_seed)
    fused.sum().backward()
    assert all(leaf.grad is not None and bool((leaf.grad != 0).any()) for leaf in leaves)
    method = get_method("dare_ties")
    models = [anchor + leaf.detach() for leaf in leaves]
    inputs = TensorInputs.from_tensors("w", {"aligned": anchor, "finetuned": models})
    engine = method.merge_tensor(inputs, method.validate(params), TensorContext("w", 7))
    assert torch.allclose(engine, anchor + fused.detach(), atol=1e-6)
