"""Misbehaving programs are contained and scored as failures; the run goes on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import get_benchmark
from benchmarks.sandbox import humaneval_program, namespaces_available, run_humaneval_samples, run_program
from benchmarks.scoring import score
from harness.core.records import GenerationRecord

FAST = {"timeout_s": 5.0, "cpu_s": 3, "memory_mb": 512, "fsize_mb": 4, "nproc": 32}
REPO_CANARY = Path(__file__).resolve().parent / "pwned_by_sandbox.txt"
MODES = ["namespace", "audit"] if namespaces_available() else ["audit"]


@pytest.fixture()
def fake_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake HOME with a sentinel (the real home is never at risk) and a fake secret in the env."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "sentinel.txt").write_text("keep me")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("REALIGN_FAKE_SECRET", "sk-fake-0123456789")
    return home


def _attacks(outside: Path, home: Path) -> dict[str, str]:
    return {
        "write_outside": f"open({str(outside / 'pwned.txt')!r}, 'w').write('x')\n",
        "write_tmp_then_check": f"open('/tmp/x', 'w').write('x')\nopen({str(outside / 'pwned2.txt')!r}, 'w')\n",
        # a root-owned directory outside /tmp (the checkout itself): read-only to the sandbox
        "write_repo": f"open({str(REPO_CANARY)!r}, 'w').write('x')\n",
        "socket": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n",
        "fork_bomb": "import os\nwhile True:\n    os.fork()\n",
        "allocate_8gb": "x = bytearray(8 * 1024 ** 3)\n",
        "loop_forever": "while True:\n    pass\n",
        "rm_home": (
            f"import os\nassert os.path.exists({str(home / 'sentinel.txt')!r}), 'sentinel not visible'\n"
            f"os.system('rm -rf ~ {home}')\nassert not os.path.exists({str(home / 'sentinel.txt')!r})\n"
        ),
        "read_secrets": (
            "import os, glob\n"
            "found = 'sk-fake' in repr(dict(os.environ))\n"
            "for path in glob.glob('/proc/*/environ'):\n"
            "    try:\n"
            "        found = found or b'sk-fake' in open(path, 'rb').read()\n"
            "    except OSError:\n"
            "        pass\n"
            "assert found, 'no secret visible'\n"
        ),
        "huge_output": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
    }


@pytest.mark.parametrize("mode", MODES)
def test_every_attack_is_contained_and_fails(mode: str, tmp_path: Path, fake_home: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    results = {name: run_program(src, isolation=mode, **FAST) for name, src in _attacks(outside, fake_home).items()}  # type: ignore[arg-type]
    failed = {name: r for name, r in results.items() if r.passed}
    assert not failed, {n: r.output_tail[-300:] for n, r in failed.items()}
    assert not (outside / "pwned.txt").exists() and not (outside / "pwned2.txt").exists()
    repo_written = REPO_CANARY.exists()
    REPO_CANARY.unlink(missing_ok=True)
    assert not repo_written
    assert (fake_home / "sentinel.txt").read_text() == "keep me"
    assert results["loop_forever"].status == "timeout" or results["loop_forever"].returncode != 0
    assert all(r.seconds < 15 for r in results.values())
    # the run continues: a good program still passes afterwards
    assert run_program("assert sum(range(4)) == 6\n", isolation=mode, **FAST).passed  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
def test_canonical_humaneval_solutions_pass(mode: str) -> None:
    items = get_benchmark("humaneval").load(limit=3)
    for item in items:
        program = humaneval_program(item, item.metadata["canonical_solution"])
        result = run_program(program, isolation=mode, **FAST)  # type: ignore[arg-type]
        assert result.passed, result.output_tail
        broken = humaneval_program(item, "    return None\n")
        assert not run_program(broken, isolation=mode, **FAST).passed  # type: ignore[arg-type]


def test_humaneval_scoring_end_to_end(fake_home: Path) -> None:
    items = {i.id: i for i in get_benchmark("humaneval").load(limit=2)}
    gens = []
    for item in items.values():
        for index, completion in enumerate(
            [
                item.metadata["canonical_solution"],
                "    while True: pass\n",
                f"```python\n{item.metadata['code_prompt']}{item.metadata['canonical_solution']}```",
            ]
        ):
            gens.append(
                GenerationRecord(
                    item_id=item.id,
                    benchmark="humaneval",
                    sample_index=index,
                    prompt_text="p",
                    prompt_hash="h",
                    completion=completion,
                    model_hash="m",
                    gen_config_hash="g",
                    backend="dummy",
                )
            )
    results = run_humaneval_samples(gens, items, allow_code_execution=True, **FAST)
    assert all(r == [True, False, True] for r in results.values())
    scores = {
        s.metric: s.value
        for s in score(
            get_benchmark("humaneval"), gens, None, items, allow_code_execution=True, ks=(1, 2), sandbox_options=FAST
        )
    }
    assert scores["pass@1"] == pytest.approx(2 / 3) and scores["pass@2"] == pytest.approx(1.0)
    assert os.environ["HOME"] == str(fake_home)
