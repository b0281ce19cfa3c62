"""Issue 11, "two runs on one store" and "validate before work": each test here failed before the fix."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from harness.core.errors import ConfigError, StoreError
from harness.core.process import process_identity
from harness.experiment import run_experiment
from harness.experiment._lock import RunInProgressError, RunLock
from harness.testing import make_finetune
from tests.harness.test_experiment import write_experiment


@pytest.fixture(scope="module")
def zoo(tiny_llama_factory, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("harden_zoo")
    base = tiny_llama_factory("harden-base")
    return {
        "aligned": base,
        "unaligned": make_finetune(base, root / "unaligned", seed=21),
        "math": make_finetune(base, root / "math", seed=22),
        "code": make_finetune(base, root / "code", seed=23),
    }


def _small(tmp_path: Path, zoo: dict[str, Path], **overrides) -> Path:
    overrides.setdefault("methods", [{"name": "sft"}, {"name": "aligned"}])
    return write_experiment(tmp_path, zoo, **overrides)


def test_second_run_on_a_locked_output_dir_is_refused_with_the_pid(tmp_path, zoo, data_dir):
    path = _small(tmp_path, zoo)
    # another open file description: flock conflicts as it does with another process
    with RunLock(tmp_path / "out"), pytest.raises(RunInProgressError, match=r"run in progress \(PID \d+"):
        run_experiment(path, progress=False)
    assert not (tmp_path / "out" / "results.sqlite").exists()
    result = run_experiment(path, progress=False)  # released: the run goes ahead
    assert result.stats.counts["cell_stored"] == 4


def test_lock_of_a_killed_holder_does_not_block(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    code = (
        "from harness.experiment._lock import RunLock; import os; "
        f"RunLock(__import__('pathlib').Path({str(out)!r})).acquire(); os._exit(9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False, cwd=Path(__file__).resolve().parents[2])
    assert (out / ".run.lock").read_text().strip().isdigit()  # the dead PID is still written there
    with RunLock(out):
        pass


def test_duplicated_result_lines_never_raise_n(tmp_path, zoo, data_dir):
    from leaderboards import Store

    path = _small(tmp_path, zoo)
    first = run_experiment(path, progress=False)
    want = Store(first.store_location).scores_frame()[["metric", "value", "n"]].sort_values(["metric", "value"])
    out = tmp_path / "out"
    for jsonl in [*(out / "generations").glob("*.jsonl"), *(out / "judgments").glob("*.jsonl")]:
        jsonl.write_text(jsonl.read_text() * 2)  # what two racing writers left behind
    (out / "results.sqlite").unlink()
    second = run_experiment(path, progress=False)
    scores = Store(second.store_location).scores_frame()
    assert (scores["n"] <= 5).all(), scores[["metric", "n"]]
    got = scores[["metric", "value", "n"]].sort_values(["metric", "value"])
    assert got.reset_index(drop=True).equals(want.reset_index(drop=True))


def test_status_marks_runs_of_dead_processes_interrupted(tmp_path):
    from leaderboards import Store

    store = Store(tmp_path / "s.sqlite")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = store.begin_run(
        "killed", {}, {"process": {"pid": dead.pid, "host": process_identity()["host"], "pid_start": None}}
    )
    alive = store.begin_run("alive", {}, {"process": process_identity()})
    elsewhere = store.begin_run("other host", {}, {"process": {"pid": 1, "host": "not-this-host", "pid_start": "1"}})
    status = {r["run_id"]: r["status"] for r in store.status()["runs"]}
    assert status == {gone: "interrupted", alive: "running", elsewhere: "running"}


def test_dry_run_writes_nothing(tmp_path, zoo, data_dir):
    path = _small(tmp_path, zoo)
    result = run_experiment(path, dry_run=True, progress=False)
    assert len(result.plan_rows) == 4
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file_is_refused_at_plan_time(tmp_path, zoo, data_dir):
    (tmp_path / "afile").write_text("not a folder")
    path = _small(tmp_path, zoo, output_dir=str(tmp_path / "afile"))
    for dry in (True, False):
        with pytest.raises(ConfigError, match=r"output_dir .*afile: exists and is not a directory"):
            run_experiment(path, dry_run=dry, progress=False)
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_schema_version_0_is_named(tmp_path):
    from leaderboards import Store

    path = tmp_path / "old.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    from leaderboards import SCHEMA_VERSION

    with pytest.raises(
        StoreError, match=rf"schema version 0, expected {SCHEMA_VERSION}"
    ) as info:  # no migration from 0
        Store(path)
    assert "corrupted" not in str(info.value)


def _bad_inputs(tmp_path: Path, zoo: dict[str, Path], other_adapter: Path, kind: str) -> tuple[dict, str]:
    models = {
        "aligned": {"path": str(zoo["aligned"])},
        "unaligned": {"path": str(zoo["unaligned"])},
        "finetuned": [{"name": "math", "path": str(zoo["math"]), "task": "math"}],
    }
    if kind == "text-file":
        (tmp_path / "notes.txt").write_text("not a model")
        models["finetuned"][0]["path"] = str(tmp_path / "notes.txt")
        return {"models": models}, r"models.finetuned\[0\]: .*notes.txt: unsupported checkpoint file"
    if kind == "empty-folder":
        (tmp_path / "empty").mkdir()
        models["finetuned"][0]["path"] = str(tmp_path / "empty")
        return {"models": models}, r"models.finetuned\[0\]: .*empty: no weights found"
    if kind == "foreign-adapter":
        models["finetuned"][0] = {
            "name": "math",
            "path": str(zoo["aligned"]),
            "adapter": str(other_adapter),
            "task": "math",
        }
        return {"models": models}, r"models.finetuned\[0\]: adapter .* does not match base"
    if kind == "backend-option":
        return (
            {"generation": {"backend": "hf", "backend_options": {"num_threadz": 1}}},
            r"generation.backend_options: unknown option 'num_threadz' \(did you mean 'num_threads'\?\)",
        )
    if kind == "samples-at-t0":
        return (
            {"generation": {"backend": "dummy", "num_samples": 3, "temperature": 0.0}},
            r"generation: num_samples=3 with temperature=0",
        )
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["text-file", "empty-folder", "foreign-adapter", "backend-option", "samples-at-t0"])
def test_bad_inputs_are_caught_at_plan_time_by_dry_run(tmp_path, zoo, data_dir, tiny_llama_factory, kind):
    from harness.core.errors import RealignError
    from harness.testing import make_lora_adapter

    other = tiny_llama_factory("harden-other", hidden_size=32, intermediate_size=64)
    adapter = tmp_path / "other-adapter"
    if kind == "foreign-adapter":
        make_lora_adapter(other, adapter, seed=5, r=2, lora_alpha=4, target_modules=["q_proj"])
    overrides, message = _bad_inputs(tmp_path, zoo, adapter, kind)
    path = _small(tmp_path, zoo, **overrides)
    for dry in (True, False):
        with pytest.raises(RealignError, match=message):
            run_experiment(path, dry_run=dry, progress=False)
        assert not (tmp_path / "out").exists()  # refused before any work: no store, no workspace


def test_two_output_dirs_sharing_one_store_do_not_run_at_once(tmp_path, zoo, data_dir):
    shared = tmp_path / "shared.sqlite"
    path = _small(tmp_path / "b", zoo, store=str(shared))
    with (
        RunLock(tmp_path, "shared.sqlite.run.lock", "store", shared),
        pytest.raises(RunInProgressError, match=r"store .*shared.sqlite: run in progress \(PID \d+"),
    ):
        run_experiment(path, progress=False)
    assert not shared.exists()
