"""The streaming merge engine end to end on tiny Llamas: closed forms, Safe LoRA, reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from harness.core.checkpoints import LoraAdapter
from realign_methods import MergeSpec, TensorContext, TensorInputs, get_method, merge, ops, plan


def _load(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors |= load_file(file)
    return tensors


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.glob("*.safetensors"))}


def test_resta_matches_closed_form(family: dict[str, Path], tmp_path: Path) -> None:
    out = merge(
        MergeSpec(
            method="resta",
            aligned=family["aligned"],
            unaligned=family["unaligned"],
            finetuned=[family["ft1"]],
            params={"gamma": 0.7},
            out=tmp_path / "o",
        )
    )
    a, u, f, o = (_load(family["aligned"]), _load(family["unaligned"]), _load(family["ft1"]), _load(out))
    assert set(o) == set(f)
    for name, value in o.items():
        expected = f[name] + 0.7 * (a[name] - u[name])
        assert torch.allclose(value, expected, atol=1e-6), name
    provenance = json.loads((out / "realign_merge.json").read_text())
    assert provenance["method"] == "resta" and provenance["params"] == {"gamma": 0.7}
    assert set(provenance["input_sha256"]) == {"aligned", "unaligned", "finetuned[0]"}
    assert all(len(h) == 64 for files in provenance["input_sha256"].values() for h in files.values())
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        assert json.loads(handle.metadata()["params"]) == {"gamma": 0.7}
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()


def test_resta_dare_matches_closed_form(family: dict[str, Path], tmp_path: Path) -> None:
    spec = MergeSpec(
        method="resta_dare",
        aligned=family["aligned"],
        unaligned=family["unaligned"],
        finetuned=[family["ft1"]],
        params={"gamma": 0.5, "p": 0.3},
        seed=11,
        out=tmp_path / "o",
    )
    o = _load(merge(spec))
    a, u, f = _load(family["aligned"]), _load(family["unaligned"]), _load(family["ft1"])
    dropped = 0.0
    for name, value in o.items():
        sparse = ops.dare(f[name] - a[name], 0.3, seed=TensorContext(name=name, seed=11).rng_seed)
        assert torch.allclose(value, a[name] + sparse + 0.5 * (a[name] - u[name]), atol=1e-6), name
        dropped += float((sparse == 0).float().mean())
    assert 0.2 < dropped / len(o) < 0.4  # DARE really dropped ~30%


def test_same_seed_gives_identical_files_and_seed_matters(family: dict[str, Path], tmp_path: Path) -> None:
    def run(seed: int, out: str) -> Path:
        return merge(
            MergeSpec(
                method="dare",
                base=family["aligned"],
                finetuned=[family["ft1"], family["ft2"]],
                params={"p": 0.5, "lam": 0.8},
                seed=seed,
                out=tmp_path / out,
            )
        )

    first, second, other = run(3, "a"), run(3, "b"), run(4, "c")
    assert _files(first) == _files(second)
    assert _files(first) != _files(other)


def test_dare_output_is_independent_of_tensor_order(family: dict[str, Path], tmp_path: Path) -> None:
    out = _load(
        merge(
            MergeSpec(
                method="dare",
                base=family["aligned"],
                finetuned=[family["ft1"]],
                params={"p": 0.4},
                seed=7,
                out=tmp_path / "o",
            )
        )
    )
    a, f = _load(family["aligned"]), _load(family["ft1"])
    method, params = get_method("dare"), get_method("dare").validate({"p": 0.4})
    for name in reversed(sorted(out)):  # a different order than the engine's walk
        inputs = TensorInputs.from_tensors(name, {"aligned": a[name], "finetuned": [f[name]]})
        value = method.merge_tensor(inputs, params, TensorContext(name=name, seed=7))
        assert torch.equal(value, out[name]), name


def test_ties_engine_equals_ops_and_output_dtype(family: dict[str, Path], tmp_path: Path) -> None:
    spec = MergeSpec(
        method="ties",
        base=family["aligned"],
        finetuned=[family["ft1"], family["ft2"]],
        params={"density": 0.3, "lam": 0.9, "reduce": "sum"},
        dtype="bfloat16",
        out=tmp_path / "o",
    )
    o = _load(merge(spec))
    a, f1, f2 = _load(family["aligned"]), _load(family["ft1"]), _load(family["ft2"])
    for name, value in o.items():
        assert value.dtype == torch.bfloat16
        expected = a[name] + ops.ties([f1[name] - a[name], f2[name] - a[name]], 0.3, 0.9, "sum")
        assert torch.equal(value, expected.to(torch.bfloat16)), name
    assert json.loads((spec.out / "config.json").read_text()).get("dtype", "bfloat16") == "bfloat16"


def test_safe_lora_matches_dense_computation(family: dict[str, Path], tmp_path: Path) -> None:
    adapter = LoraAdapter.load(family["adapter"])
    a, b = _load(family["aligned"]), _load(family["base"])
    sims: dict[str, float] = {}
    dense: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name in adapter.modules():
        delta = adapter.delta(name)
        assert delta is not None
        v = a[name] - b[name]
        c = v @ v.T / torch.linalg.norm(v)  # the paper's projection, formed densely
        projected = c @ delta
        sims[name] = float(torch.nn.functional.cosine_similarity(projected.reshape(1, -1), delta.reshape(1, -1)))
        dense[name] = (delta, projected)
    threshold = sorted(sims.values())[len(sims) // 2]  # project about half the layers

    def check(out: Path, chosen: set[str]) -> None:
        o = _load(out)
        for name, value in o.items():
            if name in dense:
                delta, projected = dense[name]
                expected = a[name] + (projected if name in chosen else delta)
            else:
                expected = a[name]
            assert torch.allclose(value, expected, atol=1e-5), name

    by_threshold = {n for n, s in sims.items() if s <= threshold}
    assert 0 < len(by_threshold) < len(sims)
    check(
        merge(
            MergeSpec(
                method="safe_lora",
                aligned=family["aligned"],
                base=family["base"],
                adapters=[family["adapter"]],
                params={"threshold": threshold},
                out=tmp_path / "t",
            )
        ),
        by_threshold,
    )
    lowest = set(sorted(sims, key=sims.__getitem__)[:2])
    check(
        merge(
            MergeSpec(
                method="safe_lora",
                aligned=family["aligned"],
                base=family["base"],
                adapters=[family["adapter"]],
                params={"num_proj_layers": 2},
                out=tmp_path / "k",
            )
        ),
        lowest,
    )
    # factor-space output: B' = C B for the chosen layers, a loadable PEFT adapter
    adapter_out = merge(
        MergeSpec(
            method="safe_lora",
            aligned=family["aligned"],
            base=family["base"],
            adapters=[family["adapter"]],
            params={"num_proj_layers": 2},
            output="adapter",
            out=tmp_path / "adapter",
        )
    )
    emitted = LoraAdapter.load(adapter_out)
    for name in adapter.modules():
        delta = emitted.delta(name)
        assert delta is not None
        assert torch.allclose(delta, dense[name][1] if name in lowest else dense[name][0], atol=1e-5), name


def test_sft_with_adapter_equals_peft_merge(family: dict[str, Path], tmp_path: Path) -> None:
    from harness.core.checkpoints import merge_adapter

    ours = _load(
        merge(MergeSpec(method="sft", aligned=family["aligned"], adapters=[family["adapter"]], out=tmp_path / "o"))
    )
    theirs = _load(merge_adapter(family["aligned"], family["adapter"], tmp_path / "ref"))
    assert all(torch.allclose(ours[n], theirs[n], atol=1e-6) for n in theirs)


def test_sharded_output_and_plan(family: dict[str, Path], tmp_path: Path) -> None:
    spec = MergeSpec(
        method="task_arithmetic",
        base=family["aligned"],
        finetuned=[family["ft1"], family["ft2"]],
        params={"lam": 0.3},
        max_shard_size=60_000,
        out=tmp_path / "o",
    )
    described = plan(spec)
    assert described.num_tensors > 0 and len(described.reads) == 3 and not spec.out.exists()
    out = merge(spec)
    assert (out / "model.safetensors.index.json").is_file()
    assert len(list(out.glob("*.safetensors"))) > 1
    o, a = _load(out), _load(family["aligned"])
    f1, f2 = _load(family["ft1"]), _load(family["ft2"])
    for name in o:
        assert torch.allclose(o[name], a[name] + 0.3 * (f1[name] - a[name] + f2[name] - a[name]), atol=1e-6)


@pytest.mark.parametrize("method", ["weight_average", "magnitude_prune", "aligned", "sft"])
def test_other_methods_run(family: dict[str, Path], tmp_path: Path, method: str) -> None:
    inputs = {
        "weight_average": {"base": family["aligned"], "finetuned": [family["ft1"], family["ft2"]]},
        "magnitude_prune": {"base": family["aligned"], "finetuned": [family["ft1"], family["ft2"]]},
        "aligned": {"aligned": family["aligned"]},
        "sft": {"finetuned": [family["ft1"]]},
    }[method]
    o = _load(merge(MergeSpec(method=method, out=tmp_path / "o", **inputs)))
    a, f1, f2 = _load(family["aligned"]), _load(family["ft1"]), _load(family["ft2"])
    for name, value in o.items():
        if method == "weight_average":
            assert torch.allclose(value, (f1[name] + f2[name]) / 2, atol=1e-6)
        elif method == "aligned":
            assert torch.equal(value, a[name])
        elif method == "sft":
            assert torch.equal(value, f1[name])
        else:
            d1, d2 = f1[name] - a[name], f2[name] - a[name]
            expected = a[name] + ops.magnitude_prune(d1, 0.2) + ops.magnitude_prune(d2, 0.2)
            assert torch.allclose(value, expected, atol=1e-6)
