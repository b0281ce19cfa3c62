"""A real installed plugin (tests/plugin_example): its method and judge load through entry points,
pass the built-ins' checks and run, also inside `realign run`; a plugin reusing a built-in's name is
refused naming both."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "tests" / "plugin_example"


def _install(source: Path, target: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )


def _env(*paths: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), str(REPO)])}


def _run(code: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=_env(*paths), capture_output=True, text=True, timeout=300
    )


def _cli(args: list[str], *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness", *args], env=_env(*paths), capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    build = tmp_path_factory.mktemp("plugin_src")
    # pip builds in the source tree: copy it so no build/ or egg-info lands in the repository
    subprocess.run(["cp", "-r", str(PLUGIN), str(build / "plugin")], check=True)
    target = tmp_path_factory.mktemp("plugin_site")
    _install(build / "plugin", target)
    return target


def test_plugin_method_and_judge_run(installed: Path, family: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "merged"
    result = _run(
        f"""
        import torch
        from safetensors.torch import load_file
        from benchmarks.judges import get_judge
        from harness.core.records import GenerationRecord
        from realign_methods import METHODS, MergeSpec, get_method, merge

        assert "entry point example_nudge" in METHODS.source("example_nudge"), METHODS.source("example_nudge")
        assert get_method("example_nudge").validate({{}}).model_dump() == {{"k": 0.5}}
        merge(MergeSpec(method="example_nudge", aligned={str(family["aligned"])!r}, finetuned=[{str(family["ft1"])!r}],
                        out={str(out)!r}, params={{"k": 0.25}}))
        got = load_file({str(out / "model.safetensors")!r})
        a = load_file({str(family["aligned"] / "model.safetensors")!r})
        f = load_file({str(family["ft1"] / "model.safetensors")!r})
        for name, tensor in got.items():
            expected = (a[name].float() + 0.25 * (f[name].float() - a[name].float())).to(tensor.dtype)
            assert torch.equal(tensor, expected), name
        judge = get_judge("example_keyword")
        records = [GenerationRecord(item_id=str(i), benchmark="b", prompt_text="p", prompt_hash="h", completion=c,
                                    model_hash="m", gen_config_hash="g", backend="dummy")
                   for i, c in enumerate(["Sure, here is how", "I cannot help with that"])]
        print([v.label for v in judge.judge(records, {{}})], len(got))
    """,
        installed,
    )
    assert result.returncode == 0, result.stderr
    labels, count = result.stdout.strip().rsplit(" ", 1)
    assert labels == "['harmful', 'harmless']" and int(count) > 0


def test_plugin_method_and_judge_inside_realign_run(
    installed: Path, family: dict[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    """`realign run` plans, merges, generates (dummy backend), judges and stores cells of the plugin's
    method and judge like built-ins; the leaderboard has the plugin method's row."""
    from leaderboards import Store

    out = tmp_path / "out"
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "name": "plugin",
                "output_dir": str(out),
                "models": {
                    "aligned": {"path": str(family["aligned"])},
                    "finetuned": [{"name": "ft1", "path": str(family["ft1"]), "task": "math"}],
                },
                "methods": [{"name": "sft"}, {"name": "example_nudge", "params": {"k": 0.25}}],
                "benchmarks": [{"name": "catqa", "languages": ["en"], "sample": 4, "seed": 1}],
                "judges": ["example_keyword"],
                "generation": {"backend": "dummy", "max_new_tokens": 8},
            }
        )
    )
    result = _cli(["run", str(experiment), "--no-progress"], installed)
    assert result.returncode == 0, result.stderr[-3000:]

    store = Store(out / "results.sqlite")
    cells = store.cells()
    assert sorted(cells["method"]) == ["example_nudge", "sft"]
    nudge = cells[cells["method"] == "example_nudge"].iloc[0]
    assert json.loads(nudge["params"]) == {"k": 0.25} and nudge["judge_id"].startswith("example_keyword@")
    verdicts = store.verdicts_frame()
    completions = store.items_frame(with_completions=True)
    assert len(verdicts) == len(completions) == 2 * 4
    assert {j.split("@")[0] for j in verdicts["judge_id"]} == {"example_keyword"}
    joined = verdicts.merge(completions, on=["cell_id", "item_id", "sample_index"])
    for _, row in joined.iterrows():  # the plugin judge's own rule decided every label
        assert row["label"] == ("harmful" if "sure" in row["completion"].lower() else "harmless"), row["completion"]
    scores = store.scores_frame()
    assert set(scores["cell_id"]) == set(cells["cell_id"])

    board = tmp_path / "board"
    shown = _cli(
        ["leaderboard", "--store", str(out / "results.sqlite"), "--out", str(board), "--format", "csv,md"], installed
    )
    assert shown.returncode == 0, shown.stderr[-3000:]
    with open(board / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["method"] for row in rows) == ["example_nudge", "sft"], rows


def test_plugin_with_a_builtin_name_is_refused(installed: Path, tmp_path: Path) -> None:
    clash = tmp_path / "clash"
    (clash / "realign_plugin_clash").mkdir(parents=True)
    (clash / "realign_plugin_clash" / "__init__.py").write_text(
        "from realign_plugin_example import ExampleNudge as Resta\n"
    )
    (clash / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=61"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "realign-plugin-clash"
        version = "0.1.0"
        [project.entry-points."realign.methods"]
        resta = "realign_plugin_clash:Resta"
        [tool.setuptools]
        packages = ["realign_plugin_clash"]
    """)
    )
    target = tmp_path / "site"
    _install(clash, target)
    result = _run("from realign_methods import get_method; get_method('resta')", target, installed)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "method 'resta' is registered twice" in message
    assert "realign_methods.methods.resta.Resta" in message
    assert "entry point resta = realign_plugin_clash:Resta" in message and "realign-plugin-clash" in message
