"""Every bad input gives one clear error naming file/tensor/field, and leaves no output behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.cli import main
from harness.core.errors import CheckpointError, ConfigError, RealignError
from realign_methods import MergeSpec, merge


def _variant(src: Path, dst: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _case(name: str, family: dict[str, Path], tmp: Path) -> tuple[dict, type[Exception], str]:
    a, u, f = family["aligned"], family["unaligned"], family["ft1"]
    resta = {"method": "resta", "aligned": a, "unaligned": u, "finetuned": [f]}
    if name == "missing_path":
        return {**resta, "unaligned": tmp / "nope"}, CheckpointError, "unaligned not found"
    if name == "shape_mismatch":
        bad = _variant(f, tmp / "bad", lambda t: t.__setitem__("model.layers.0.mlp.up_proj.weight", torch.zeros(7, 64)))
        return (
            {**resta, "finetuned": [bad]},
            CheckpointError,
            "shape mismatch for tensor 'model.layers.0.mlp.up_proj.weight'",
        )
    if name == "missing_tensor":
        bad = _variant(u, tmp / "bad", lambda t: t.pop("model.norm.weight"))
        return {**resta, "unaligned": bad}, CheckpointError, "lacks tensor 'model.norm.weight'"
    if name == "vocab_mismatch":

        def grow(t: dict) -> None:
            t["model.embed_tokens.weight"] = torch.zeros(t["model.embed_tokens.weight"].shape[0] + 5, 64)

        bad = _variant(u, tmp / "bad", grow)
        return {**resta, "unaligned": bad}, CheckpointError, "vocab size mismatch: tensor 'model.embed_tokens.weight'"
    if name == "dtype_mismatch":
        bad = _variant(u, tmp / "bad", lambda t: t.__setitem__("lm_head.weight", t["lm_head.weight"].half()))
        return {**resta, "unaligned": bad}, CheckpointError, "dtype mismatch for tensor 'lm_head.weight'"
    if name == "unknown_method":
        return {**resta, "method": "resta_dar"}, ConfigError, "did you mean 'resta_dare'"
    if name == "unknown_parameter":
        return {**resta, "params": {"gama": 1}}, ConfigError, "unknown parameter 'gama' (did you mean 'gamma'?)"
    if name == "p_out_of_range":
        return {**resta, "method": "resta_dare", "params": {"p": 1.0}}, ConfigError, "parameter 'p'"
    if name == "negative_density":
        return (
            {"method": "ties", "base": a, "finetuned": [f], "params": {"density": -0.1}},
            ConfigError,
            "allowed: 0.0 <= density <= 1.0",
        )
    if name == "adapter_base_mismatch":
        return (
            {"method": "sft", "aligned": family["other"], "adapters": [family["adapter"]]},
            CheckpointError,
            "does not match base",
        )
    if name == "pickle_without_flag":
        bad = tmp / "pickled"
        shutil.copytree(f, bad)
        torch.save(load_file(bad / "model.safetensors"), bad / "pytorch_model.bin")
        (bad / "model.safetensors").unlink()
        return {**resta, "finetuned": [bad]}, CheckpointError, "pickle checkpoint"
    if name == "truncated_safetensors":
        bad = tmp / "trunc"
        shutil.copytree(f, bad)
        data = (bad / "model.safetensors").read_bytes()
        (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
        return {**resta, "finetuned": [bad]}, CheckpointError, "model.safetensors"
    if name == "missing_input":
        return {"method": "resta", "aligned": a, "finetuned": [f]}, ConfigError, "needs input(s) unaligned"
    raise AssertionError(name)


CASES = [
    "missing_path",
    "shape_mismatch",
    "missing_tensor",
    "vocab_mismatch",
    "dtype_mismatch",
    "unknown_method",
    "unknown_parameter",
    "p_out_of_range",
    "negative_density",
    "adapter_base_mismatch",
    "pickle_without_flag",
    "truncated_safetensors",
    "missing_input",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_cleanly(case: str, family: dict[str, Path], tmp_path: Path) -> None:
    fields, error, fragment = _case(case, family, tmp_path)
    out_parent = tmp_path / "outputs"
    out_parent.mkdir()
    with pytest.raises(error) as info:
        merge(MergeSpec(out=out_parent / "merged", **fields))
    assert fragment in str(info.value)
    assert list(out_parent.iterdir()) == []  # no output dir, no temp dir


def test_pickle_is_loaded_with_the_flag(family: dict[str, Path], tmp_path: Path) -> None:
    fields, _, _ = _case("pickle_without_flag", family, tmp_path)
    out = merge(MergeSpec(out=tmp_path / "o", allow_pickle=True, **fields))
    assert (out / "model.safetensors").is_file()


def test_cli_merge_yaml_override_dry_run_and_errors(
    family: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "merge.yaml"
    config.write_text(
        json.dumps(
            {
                "method": "resta",
                "aligned": str(family["aligned"]),
                "unaligned": str(family["unaligned"]),
                "finetuned": [str(family["ft1"])],
                "params": {"gamma": 0.2},
                "out": str(tmp_path / "o"),
            }
        )
    )
    main(["merge", "--config", str(config), "-p", "gamma=0.9", "--dry-run"])
    printed = capsys.readouterr().out
    assert "'gamma': 0.9" in printed and "nothing written" in printed and not (tmp_path / "o").exists()
    main(["merge", "--config", str(config), "-p", "gamma=0.9", "--seed", "3"])
    provenance = json.loads((tmp_path / "o" / "realign_merge.json").read_text())
    assert provenance["params"] == {"gamma": 0.9} and provenance["seed"] == 3
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", "--config", str(config), "--out", str(tmp_path / "o2"), "-p", "gamma=-1"])
    assert exit_info.value.code == 2
    assert "error: method 'resta': parameter 'gamma'" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_cli_methods_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    main(["methods", "list"])
    listed = capsys.readouterr().out
    for name in ("resta", "resta_dare", "ties", "dare", "safe_lora", "sft", "aligned", "task_arithmetic"):
        assert name in listed
    main(["methods", "show", "resta_dare"])
    shown = capsys.readouterr().out
    assert "gamma" in shown and "0.5" in shown and "p < 1.0" in shown and "arXiv:2402.11746" in shown
    with pytest.raises(SystemExit):
        main(["methods", "show", "rest"])
    assert "did you mean" in capsys.readouterr().err


def test_realign_error_type() -> None:
    assert issubclass(ConfigError, RealignError)
