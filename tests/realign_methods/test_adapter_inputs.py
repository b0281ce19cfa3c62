"""Merges with PEFT adapters (issue 12): adapter folders where a model is expected, and ``adapters``
inputs relative to the right model.

A tiny random Llama B and real PEFT adapters on it, laid out like the organism: θ_A's adapter, θ_U and a
task θ_F each *continuing* it (same base B, factors moved on), and one adapter trained on the dense θ_A.
Expected values are the dense closed forms computed from ``merge_adapter`` copies (PEFT's formula).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.core.checkpoints import CheckpointReader, merge_adapter
from harness.core.errors import CheckpointError, ConfigError
from harness.testing import continue_adapter, make_lora_adapter
from realign_methods import MergeSpec, get_method, merge, plan

TOL = 1e-6  # fp32 throughout
GAMMA, LAM = 0.5, 0.7
MODULES = ["q_proj", "v_proj", "down_proj", "k_proj"]


def _load(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(path.glob("*.safetensors")):
        tensors |= load_file(file)
    return tensors


def _max_error(out: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> float:
    assert set(out) == set(expected)
    return max(float((out[n].float() - expected[n].float()).abs().max()) for n in expected)


def _unresolvable(adapter: Path, out: Path) -> Path:
    """A copy of ``adapter`` whose config names a base that does not exist here (a hub id, say)."""
    shutil.copytree(adapter, out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "some-org/not-on-this-machine"
    (out / "adapter_config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def zoo(tiny_llama_factory, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapter_zoo")
    base = tiny_llama_factory("base")
    aligned = make_lora_adapter(base, root / "aligned", seed=1, r=4, lora_alpha=8, target_modules=MODULES)
    unaligned = continue_adapter(base, aligned, root / "unaligned", seed=2)
    math = continue_adapter(base, aligned, root / "math", seed=3)
    aligned_dense = merge_adapter(base, aligned, root / "aligned_dense")
    on_aligned = make_lora_adapter(
        aligned_dense, root / "on_aligned", seed=4, r=2, lora_alpha=4, target_modules=["q_proj", "o_proj"]
    )
    return {
        "base": base,
        "aligned": aligned,
        "unaligned": unaligned,
        "math": math,
        "on_aligned": on_aligned,
        "aligned_dense": aligned_dense,
        "unaligned_dense": merge_adapter(base, unaligned, root / "unaligned_dense"),
        "math_dense": merge_adapter(base, math, root / "math_dense"),
        "on_aligned_dense": merge_adapter(aligned_dense, on_aligned, root / "on_aligned_dense"),
        "math_unresolvable": _unresolvable(math, root / "math_unresolvable"),
        "aligned_unresolvable": _unresolvable(aligned, root / "aligned_unresolvable"),
    }


@pytest.fixture(scope="module")
def dense(zoo: dict[str, Path]) -> dict[str, dict[str, torch.Tensor]]:
    return {k: _load(zoo[k]) for k in ("base", "aligned_dense", "unaligned_dense", "math_dense", "on_aligned_dense")}


def _resta(d: dict[str, dict[str, torch.Tensor]], finetuned: str) -> dict[str, torch.Tensor]:
    a, u, f = d["aligned_dense"], d["unaligned_dense"], d[finetuned]
    return {n: f[n] + GAMMA * (a[n] - u[n]) for n in a}


def _task_arithmetic(d: dict[str, dict[str, torch.Tensor]], anchor: str, finetuned: str) -> dict[str, torch.Tensor]:
    x, f = d[anchor], d[finetuned]
    return {n: x[n] + LAM * (f[n] - x[n]) for n in x}


# -- (1) adapter folders where a model is expected ---------------------------------------------------------


def test_reader_refuses_an_adapter_folder_as_a_model(zoo: dict[str, Path]) -> None:
    # the bug: adapter_model.safetensors was read as the model's weights (a "dense" model of LoRA factors)
    with pytest.raises(CheckpointError, match=r"is a PEFT LoRA adapter .*not a model checkpoint.*merge-adapter"):
        CheckpointReader(zoo["aligned"])


def test_resta_on_adapter_folders_equals_the_merged_copies(zoo: dict[str, Path], dense, tmp_path: Path) -> None:
    """The organism command shape: every model an adapter folder, bases from their adapter configs."""
    out = merge(
        MergeSpec(
            method="resta",
            aligned=zoo["aligned"],
            unaligned=zoo["unaligned"],
            finetuned=[zoo["math"]],
            out=tmp_path / "o",
            params={"gamma": GAMMA},
        )
    )
    merged = _load(out)
    assert set(merged) == set(dense["base"])  # a dense model, not LoRA factors
    assert (out / "config.json").is_file()  # config and tokenizer come from the base
    assert _max_error(merged, _resta(dense, "math_dense")) <= TOL
    from_copies = _load(
        merge(
            MergeSpec(
                method="resta",
                aligned=zoo["aligned_dense"],
                unaligned=zoo["unaligned_dense"],
                finetuned=[zoo["math_dense"]],
                out=tmp_path / "c",
                params={"gamma": GAMMA},
            )
        )
    )
    assert all(torch.equal(merged[n], from_copies[n]) for n in merged)  # same bits as merge-adapter copies
    provenance = json.loads((out / "realign_merge.json").read_text())
    assert any(k.startswith("adapter/") for k in provenance["input_sha256"]["aligned"])


def test_adapter_folder_without_resolvable_base_is_refused(zoo: dict[str, Path], tmp_path: Path) -> None:
    spec = MergeSpec(
        method="resta",
        aligned=zoo["aligned_unresolvable"],
        unaligned=zoo["unaligned"],
        finetuned=[zoo["math"]],
        out=tmp_path / "o",
    )
    with pytest.raises(CheckpointError) as info:
        merge(spec)
    message = str(info.value)
    for fragment in ("aligned", str(zoo["aligned_unresolvable"]), "some-org/not-on-this-machine", "--base"):
        assert fragment in message
    assert not (tmp_path / "o").exists()
    spec = MergeSpec(
        method="resta",
        aligned=zoo["aligned"],
        unaligned=zoo["unaligned"],
        finetuned=[zoo["math_unresolvable"]],
        out=tmp_path / "o",
    )
    with pytest.raises(CheckpointError, match=r"finetuned\[0\] .*math_unresolvable.*--base"):
        merge(spec)


def test_cli_base_resolves_adapter_folders(
    zoo: dict[str, Path], dense, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--base for a method that does not read a base (RESTA) is the base of the adapter folders only."""
    from harness.cli._main import main

    args = [
        "merge",
        "-m",
        "resta",
        "--aligned",
        str(zoo["aligned_unresolvable"]),
        "--unaligned",
        str(zoo["unaligned"]),
        "-f",
        str(zoo["math_unresolvable"]),
        "-p",
        f"gamma={GAMMA}",
    ]
    with pytest.raises(SystemExit) as refused:
        main([*args, "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert refused.value.code == 2
    assert f"error: aligned {zoo['aligned_unresolvable']} is a PEFT LoRA adapter" in err and "--base BASE_DIR" in err
    main([*args, "--base", str(zoo["base"]), "--out", str(tmp_path / "b")])
    assert _max_error(_load(tmp_path / "b"), _resta(dense, "math_dense")) <= TOL


def test_task_arithmetic_with_adapter_folders_and_a_base_anchor(zoo: dict[str, Path], dense, tmp_path: Path) -> None:
    out = merge(
        MergeSpec(
            method="task_arithmetic", base=zoo["base"], finetuned=[zoo["math"]], out=tmp_path / "o", params={"lam": LAM}
        )
    )
    assert _max_error(_load(out), _task_arithmetic(dense, "base", "math_dense")) <= TOL


# -- (2) adapters relative to the right model ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["resta", "task_arithmetic"])
def test_adapter_continuing_the_aligned_adapter(method: str, zoo: dict[str, Path], dense, tmp_path: Path) -> None:
    """θ_F continues θ_A's adapter on B: the update is Δ_F − Δ_A, not Δ_F (which counts Δ_A twice)."""
    fields = {"aligned": zoo["aligned"], "adapters": [zoo["math"]], "out": tmp_path / "o"}
    if method == "resta":
        spec = MergeSpec(method="resta", unaligned=zoo["unaligned"], params={"gamma": GAMMA}, **fields)
        expected = _resta(dense, "math_dense")
    else:
        spec = MergeSpec(method="task_arithmetic", params={"lam": LAM}, **fields)
        expected = _task_arithmetic(dense, "aligned_dense", "math_dense")
    out = merge(spec)
    assert _max_error(_load(out), expected) <= TOL
    notes = json.loads((out / "realign_merge.json").read_text())["adapter_updates"]
    assert f"- {zoo['aligned']}" in notes["adapters[0]"]
    lines = plan(spec.model_copy(update={"out": tmp_path / "dry"})).lines()  # --dry-run says the same
    assert f"read  aligned        {zoo['base']} + adapter {zoo['aligned']}" in "\n".join(lines)
    assert any(line.startswith("update adapters[0]") and notes["adapters[0]"] in line for line in lines)
    # what the engine computed before: Δ_F on top of θ_A; the difference is Δ_A (·λ for task arithmetic)
    from harness.core.checkpoints import LoraAdapter

    name = "model.layers.0.self_attn.q_proj.weight"
    delta_a = LoraAdapter.load(zoo["aligned"]).delta(name)
    assert delta_a is not None and float(delta_a.abs().max()) > 1e-3


def test_adapter_base_says_what_the_config_does_not(zoo: dict[str, Path], dense, tmp_path: Path) -> None:
    fields = {
        "method": "resta",
        "aligned": zoo["aligned"],
        "unaligned": zoo["unaligned"],
        "adapters": [zoo["math_unresolvable"]],
        "params": {"gamma": GAMMA},
    }
    with pytest.raises(ConfigError, match=r"adapters\[0\].*cannot tell which model.*--adapter-base"):
        merge(MergeSpec(out=tmp_path / "a", **fields))  # ambiguous: refused, not guessed
    out = merge(MergeSpec(out=tmp_path / "b", adapter_base="base", **fields))
    assert _max_error(_load(out), _resta(dense, "math_dense")) <= TOL
    out = merge(MergeSpec(out=tmp_path / "c", adapter_base=str(zoo["base"]), **fields))
    assert _max_error(_load(out), _resta(dense, "math_dense")) <= TOL


@pytest.mark.parametrize("method", ["resta", "task_arithmetic"])
def test_adapter_trained_on_the_dense_aligned_model(method: str, zoo: dict[str, Path], dense, tmp_path: Path) -> None:
    fields = {"aligned": zoo["aligned_dense"], "adapters": [zoo["on_aligned"]], "out": tmp_path / "o"}
    if method == "resta":
        spec = MergeSpec(method="resta", unaligned=zoo["unaligned_dense"], params={"gamma": GAMMA}, **fields)
        expected = _resta(dense, "on_aligned_dense")
    else:
        spec = MergeSpec(method="task_arithmetic", params={"lam": LAM}, **fields)
        expected = _task_arithmetic(dense, "aligned_dense", "on_aligned_dense")
    assert _max_error(_load(merge(spec)), expected) <= TOL
    # the same adapter declared relative to θ_A explicitly gives the same result
    again = merge(spec.model_copy(update={"adapter_base": "aligned", "out": tmp_path / "p"}))
    assert _max_error(_load(again), expected) <= TOL


def test_adapter_on_theta_a_with_a_base_anchor_adds_theta_a_adapter(
    zoo: dict[str, Path], dense, tmp_path: Path
) -> None:
    """Task arithmetic anchored at B with an adapter trained on θ_A = B + Δ_A: the task vector is Δ_A + Δ_F."""
    fields = {
        "method": "task_arithmetic",
        "base": zoo["base"],
        "aligned": zoo["aligned"],
        "adapters": [zoo["on_aligned"]],
        "params": {"lam": LAM},
    }
    # its config names the dense copy of θ_A, not the aligned input (an adapter folder): not the same model
    with pytest.raises(ConfigError, match=r"adapters\[0\] .*on_aligned is relative to .*aligned_dense"):
        merge(MergeSpec(out=tmp_path / "a", **fields))
    out = merge(MergeSpec(out=tmp_path / "b", adapter_base="aligned", **fields))
    assert _max_error(_load(out), _task_arithmetic(dense, "base", "on_aligned_dense")) <= TOL
    assert (
        f"+ {zoo['aligned']}" in json.loads((out / "realign_merge.json").read_text())["adapter_updates"]["adapters[0]"]
    )


def test_base_relative_adapter_on_a_dense_aligned_model_is_refused(zoo: dict[str, Path], tmp_path: Path) -> None:
    spec = MergeSpec(
        method="resta",
        aligned=zoo["aligned_dense"],
        unaligned=zoo["unaligned_dense"],
        adapters=[zoo["math"]],
        out=tmp_path / "o",
    )
    with pytest.raises(ConfigError, match=r"adapters\[0\] .*math is relative to .*base.*not a low-rank update"):
        merge(spec)
    assert not (tmp_path / "o").exists()


def test_safe_lora_gets_the_aligned_adapter_filled_in(zoo: dict[str, Path], tmp_path: Path) -> None:
    spec = MergeSpec(
        method="safe_lora",
        aligned=zoo["aligned"],
        base=zoo["base"],
        adapters=[zoo["math"]],
        out=tmp_path / "o",
        params={"aligned_adapter": None},
    )
    # safe_lora takes the correction as its aligned_adapter parameter: filled in, as realign run does
    auto = _load(merge(spec))
    explicit = _load(
        merge(
            MergeSpec(
                method="safe_lora",
                aligned=zoo["aligned_dense"],
                base=zoo["base"],
                adapters=[zoo["math"]],
                out=tmp_path / "e",
                params={"aligned_adapter": str(zoo["aligned"])},
            )
        )
    )
    assert _max_error(auto, explicit) <= TOL
    notes = json.loads((tmp_path / "o" / "realign_merge.json").read_text())
    assert notes["params"]["aligned_adapter"] == str(zoo["aligned"])


def test_combined_update_is_not_written_as_an_adapter(
    zoo: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Δ_F − Δ_A has no single PEFT config (rank r_F + r_A, scaling 1): a factor-space method is refused."""
    # the variants' classes are built from the FUSION_VARIANTS table, so reach this one through the registry
    monkeypatch.setattr(type(get_method("task_arithmetic")), "supports_adapter_output", True)
    with pytest.raises(ConfigError, match=r"output='adapter': adapters\[0\].*not one PEFT adapter"):
        merge(
            MergeSpec(
                method="task_arithmetic",
                aligned=zoo["aligned"],
                adapters=[zoo["math"]],
                out=tmp_path / "x",
                output="adapter",
            )
        )
    assert not (tmp_path / "x").exists()


def test_somf_refuses_adapter_folders_it_would_read_as_their_base(zoo: dict[str, Path], tmp_path: Path) -> None:
    spec = MergeSpec(
        method="somf",
        aligned=zoo["aligned"],
        finetuned=[zoo["math_dense"]],
        out=tmp_path / "o",
        params={"setting": "full", "steps": 1},
    )
    with pytest.raises(ConfigError, match=r"somf reads its models as directories, but aligned .*aligned is a LoRA"):
        merge(spec)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_the_organism_command(smollm2_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 12's command on the shipped organism: folders resolved onto the bundled SmolLM2 their configs
    name; -f (dense θ_F) and --adapter (Δ_F − Δ_A, math continues θ_A's adapter) agree with the closed form."""
    from harness.core.checkpoints import LoraAdapter

    organism = Path(__file__).resolve().parents[2] / "organism"
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / "SmolLM2-135M-Instruct").symlink_to(smollm2_dir)  # 'smollm2-135m-instruct' resolves here
    monkeypatch.setenv("REALIGN_CACHE_DIR", str(cache))
    models = {"aligned": organism / "aligned", "unaligned": organism / "unaligned"}
    dense = _load(
        merge(
            MergeSpec(
                method="resta", finetuned=[organism / "math"], out=tmp_path / "f", params={"gamma": GAMMA}, **models
            )
        )
    )
    factors = _load(
        merge(
            MergeSpec(
                method="resta", adapters=[organism / "math"], out=tmp_path / "a", params={"gamma": GAMMA}, **models
            )
        )
    )
    base = _load(smollm2_dir)
    a, u, f = (LoraAdapter.load(organism / n) for n in ("aligned", "unaligned", "math"))
    worst = 0.0
    for name, weight in base.items():
        deltas = [x.delta(name) for x in (a, u, f)]
        d_a, d_u, d_f = (torch.zeros_like(weight.float()) if d is None else d for d in deltas)
        expected = weight.float() + d_f + GAMMA * (d_a - d_u)
        for out in (dense, factors):
            worst = max(worst, float((out[name].float() - expected).abs().max()))
    assert worst <= 1e-5 * max(1.0, max(float(w.abs().max()) for w in base.values()))
