"""Issue 11, "non-finite weights and pickle": each test here failed before the fix (merges passed NaN
through, generation loaded a NaN model, the hf backend and `realign run` loaded pytorch_model.bin)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.core.checkpoints import CheckpointReader, NonFiniteError
from harness.core.errors import CheckpointError
from harness.experiment import run_experiment
from harness.generate import get_backend
from harness.testing import make_finetune
from realign_methods import MergeSpec, merge
from tests.harness.test_experiment import write_experiment

POISONED = "model.layers.0.mlp.up_proj.weight"


def poison(src: Path, dst: Path, value: float, name: str = POISONED) -> Path:
    """A copy of model ``src`` with one element of tensor ``name`` set to ``value`` (real safetensors)."""
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[3] = value
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def to_pickle(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose weights are pytorch_model.bin only."""
    shutil.copytree(src, dst)
    torch.save(load_file(dst / "model.safetensors"), dst / "pytorch_model.bin")
    (dst / "model.safetensors").unlink()
    return dst


@pytest.fixture(scope="module")
def models(tiny_llama_factory, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    base = tiny_llama_factory("weights-base")
    unaligned = make_finetune(base, root / "unaligned", seed=31)
    math = make_finetune(base, root / "math", seed=32)
    return {
        "aligned": base,
        "unaligned": unaligned,
        "math": math,
        "code": make_finetune(base, root / "code", seed=33),
        "math_nan": poison(math, root / "math_nan", float("nan")),
        "unaligned_inf": poison(unaligned, root / "unaligned_inf", float("inf")),
        "math_pickle": to_pickle(math, root / "math_pickle"),
    }


METHOD_INPUTS = {
    "task_arithmetic": {"base": "aligned", "finetuned": ["math_nan"]},
    "resta": {"aligned": "aligned", "unaligned": "unaligned", "finetuned": ["math_nan"]},
    "resta_dare": {"aligned": "aligned", "unaligned": "unaligned_inf", "finetuned": ["math"]},
}


@pytest.mark.parametrize("method", sorted(METHOD_INPUTS))
def test_merge_refuses_a_nonfinite_input_naming_the_tensor(models, tmp_path, method):
    fields = {
        role: ([models[v] for v in value] if isinstance(value, list) else models[value])
        for role, value in METHOD_INPUTS[method].items()
    }
    out = tmp_path / "out"
    with pytest.raises(NonFiniteError, match=rf"_(nan|inf).*tensor '{POISONED}' has 1 non-finite.*--allow-nonfinite"):
        merge(MergeSpec(method=method, out=out, **fields))
    assert not out.exists() and not list(tmp_path.glob(".out.tmp*"))  # nothing half-written
    merge(MergeSpec(method=method, out=out, allow_nonfinite=True, **fields))
    assert not torch.isfinite(CheckpointReader(out).get(POISONED)).all()


def test_merge_refuses_a_nonfinite_output(models, tmp_path):
    big = tmp_path / "big"
    shutil.copytree(models["math"], big)
    tensors = {k: v * 0 + 3e38 if k == POISONED else v for k, v in load_file(big / "model.safetensors").items()}
    save_file(tensors, big / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NonFiniteError, match=rf"method 'task_arithmetic' output: tensor '{POISONED}'"):
        merge(
            MergeSpec(
                method="task_arithmetic",
                base=models["aligned"],
                finetuned=[big],
                params={"lam": 10.0},
                out=tmp_path / "out",
            )
        )
    assert not (tmp_path / "out").exists()


def test_generation_refuses_a_nonfinite_model(models):
    with pytest.raises(NonFiniteError, match=rf"math_nan: tensor '{POISONED}'.*refusing to generate"):
        get_backend("dummy", models["math_nan"])


def test_hf_backend_refuses_pickle_without_allow_pickle(models):
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin is a pickle checkpoint.*--allow-pickle"):
        get_backend("hf", models["math_pickle"])


def _exp(tmp_path: Path, models: dict[str, Path], math: str, **overrides) -> Path:
    return write_experiment(
        tmp_path,
        models,
        models={
            "aligned": {"path": str(models["aligned"])},
            "unaligned": {"path": str(models["unaligned"])},
            "finetuned": [{"name": "math", "path": str(models[math]), "task": "math"}],
        },
        methods=[{"name": "sft"}],
        **overrides,
    )


def test_run_refuses_pickle_unless_allowed(models, tmp_path, data_dir):
    from leaderboards import Store

    with pytest.raises(CheckpointError, match="pickle"):
        run_experiment(_exp(tmp_path / "a", models, "math_pickle"), progress=False)
    store = tmp_path / "a" / "out" / "results.sqlite"
    assert not store.exists() or not Store(store).complete_cells()
    result = run_experiment(_exp(tmp_path / "b", models, "math_pickle", allow_pickle=True), progress=False)
    assert result.stats.counts["cell_stored"] == 1


def test_run_refuses_a_nan_model(models, tmp_path, data_dir):
    from leaderboards import Store

    with pytest.raises(NonFiniteError, match=POISONED):
        run_experiment(_exp(tmp_path, models, "math_nan"), progress=False)
    store = tmp_path / "out" / "results.sqlite"
    assert not store.exists() or not Store(store).complete_cells()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("position", [0, 777, -1])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_check_finite_fast_path_finds_every_nonfinite_entry(dtype, position, value):
    """check_finite decides by the tensor's sum first; one bad entry anywhere must still be found."""
    from harness.core.checkpoints._finite import check_finite

    tensor = torch.randn(1000, 3).to(dtype)
    check_finite(tensor, "w", "here")
    tensor.view(-1)[position] = value
    with pytest.raises(NonFiniteError, match=r"here: tensor 'w' has 1 non-finite values of 3000"):
        check_finite(tensor, "w", "here")


def test_check_finite_accepts_finite_values_whose_sum_overflows():
    from harness.core.checkpoints._finite import check_finite

    big = torch.full((64,), torch.finfo(torch.float16).max, dtype=torch.float16)
    assert not torch.isfinite(big.sum())  # the fast path overflows, the exact check decides
    check_finite(big, "w", "here")
    opposite = torch.tensor([float("inf"), float("-inf"), 1.0])
    with pytest.raises(NonFiniteError, match=r"2 non-finite values of 3 \(0 NaN, 2 ±inf\)"):
        check_finite(opposite, "w", "here")
