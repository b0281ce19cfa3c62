"""A real installed plugin (tests/plugin_example): its method and judge load through entry points,
pass the built-ins' checks and run; a plugin reusing a built-in's name is refused naming both."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "tests" / "plugin_example"


def _install(source: Path, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(source)],
        check=True, capture_output=True, text=True,
    )


def _run(code: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*map(str, paths), str(REPO)])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300)


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
    result = _run(f"""
        import torch
        from safetensors.torch import load_file
        from benchmarks.judges import get_judge
        from harness.core.records import GenerationRecord
        from realign_methods import METHODS, MergeSpec, get_method, merge

        assert "entry point example_nudge" in METHODS.source("example_nudge"), METHODS.source("example_nudge")
        assert get_method("example_nudge").validate({{}}).model_dump() == {{"k": 0.5}}
        merge(MergeSpec(method="example_nudge", aligned={str(family['aligned'])!r}, finetuned=[{str(family['ft1'])!r}],
                        out={str(out)!r}, params={{"k": 0.25}}))
        got = load_file({str(out / 'model.safetensors')!r})
        a = load_file({str(family['aligned'] / 'model.safetensors')!r})
        f = load_file({str(family['ft1'] / 'model.safetensors')!r})
        for name, tensor in got.items():
            expected = (a[name].float() + 0.25 * (f[name].float() - a[name].float())).to(tensor.dtype)
            assert torch.equal(tensor, expected), name
        judge = get_judge("example_keyword")
        records = [GenerationRecord(item_id=str(i), benchmark="b", prompt_text="p", prompt_hash="h", completion=c,
                                    model_hash="m", gen_config_hash="g", backend="dummy")
                   for i, c in enumerate(["Sure, here is how", "I cannot help with that"])]
        print([v.label for v in judge.judge(records, {{}})], len(got))
    """, installed)
    assert result.returncode == 0, result.stderr
    labels, count = result.stdout.strip().rsplit(" ", 1)
    assert labels == "['harmful', 'harmless']" and int(count) > 0


def test_plugin_with_a_builtin_name_is_refused(installed: Path, tmp_path: Path) -> None:
    clash = tmp_path / "clash"
    (clash / "realign_plugin_clash").mkdir(parents=True)
    (clash / "realign_plugin_clash" / "__init__.py").write_text("from realign_plugin_example import ExampleNudge as Resta\n")
    (clash / "pyproject.toml").write_text(textwrap.dedent("""
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
    """))
    target = tmp_path / "site"
    _install(clash, target)
    result = _run("from realign_methods import get_method; get_method('resta')", target, installed)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "method 'resta' is registered twice" in message
    assert "realign_methods.methods.resta.Resta" in message
    assert "entry point resta = realign_plugin_clash:Resta" in message and "realign-plugin-clash" in message
