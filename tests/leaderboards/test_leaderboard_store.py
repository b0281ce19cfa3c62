"""The results store: schema, idempotent writes, statuses, bad input, two processes writing at once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from lb_synth import FINETUNED, METHODS, N_ITEMS, SAFETY, build_store, write_synthetic_run

from harness.cli import cli, main
from harness.core.errors import StoreError
from harness.core.records import GenerationRecord, Score, Verdict
from leaderboards import SCHEMA_VERSION, CellRecord, Store, collect_provenance

REPO = Path(__file__).resolve().parents[2]
CELLS_PER_RUN = len(METHODS) * len(FINETUNED) * 4  # 2 safety + gsm8k + humaneval
ITEMS_PER_RUN = len(METHODS) * len(FINETUNED) * 3 * N_ITEMS  # humaneval has aggregates only


def _table_counts(path: Path) -> dict[str, int]:
    """Row counts read with plain sqlite3, independent of the Store's own queries."""
    with sqlite3.connect(path) as conn:
        return {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("runs", "cells", "run_cells", "items", "generations", "verdicts", "item_scores", "scores")
        }


def test_write_api_roundtrip(synthetic_store: tuple[Path, str]) -> None:
    path, run_id = synthetic_store
    counts = _table_counts(path)
    assert counts["runs"] == 1 and counts["cells"] == CELLS_PER_RUN == counts["run_cells"]
    assert counts["items"] == counts["generations"] == ITEMS_PER_RUN
    # one harm verdict per safety item, plus the pairwise verdicts of somf on catqa
    assert counts["verdicts"] == len(METHODS) * len(FINETUNED) * len(SAFETY) * N_ITEMS + len(FINETUNED) * N_ITEMS
    store = Store(path, create=False)
    assert store.schema_version == SCHEMA_VERSION
    run = store.run(run_id[:15])  # a unique prefix resolves
    assert run["run_id"] == run_id and run["status"] == "done" and run["finished_at"]
    assert run["provenance"]["packages"]["torch"] and run["provenance"]["seeds"] == {"seed": 0}
    assert run["config"]["name"] == "synthetic" and len(run["config_hash"]) == 32
    cells = store.cells(run_id)
    assert set(cells["run_status"]) == {"done"} and set(cells["status"]) == {"done"}
    assert len(store.complete_cells()) == CELLS_PER_RUN
    scores = store.scores_frame(run_id)
    assert {"harmfulness", "exact_match", "invalid_rate", "pass@1"} == set(scores["metric"])
    assert all(s == {} for s in scores["subset"])
    items = store.items_frame(run_id, with_completions=True)
    catqa = items[items["benchmark"] == "catqa"]
    assert set(catqa["language"]) == {"en", "zh"} and catqa["completion"].str.len().min() > 0


def test_rewrites_are_idempotent(tmp_path: Path) -> None:
    store, _ = build_store(tmp_path / "s.sqlite")
    before = _table_counts(tmp_path / "s.sqlite")
    # the same run written again (a resumed runner re-storing its cells), then a second run hitting
    # the same content-addressed cells: no row may appear twice
    write_synthetic_run(store, name="again")
    after = _table_counts(tmp_path / "s.sqlite")
    assert after["runs"] == 2 and after["run_cells"] == 2 * CELLS_PER_RUN
    for table in ("cells", "items", "generations", "verdicts", "item_scores", "scores"):
        assert after[table] == before[table], table
    with sqlite3.connect(tmp_path / "s.sqlite") as conn:
        dupes = conn.execute(
            "SELECT COUNT(*) FROM (SELECT cell_id, item_id, COUNT(*) c FROM generations "
            "GROUP BY cell_id, item_id, sample_index HAVING c > 1)"
        ).fetchone()[0]
    assert dupes == 0


def test_cell_statuses_and_status_command(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store, first = build_store(path, methods=["sft"])
    second = store.begin_run("second", {"x": 1}, collect_provenance(device="cpu"))
    done_id = store.cells(first)["cell_id"].iloc[0]
    # a cell already done is linked as cached, keeps its results; new cells go pending -> failed
    assert store.record_cell(second, CellRecord(**{**_cell_fields(store, done_id)})) == done_id
    new = CellRecord(cell_id="new-cell", method="resta", finetuned="ft-code", benchmark="catqa")
    store.record_cell(second, new)
    other = CellRecord(cell_id="failing-cell", method="resta", finetuned="ft-math", benchmark="catqa")
    store.record_cell(second, other)
    store.fail_cell(second, "failing-cell", "CUDA out of memory")
    status = store.status()
    by_run = {r["run_id"]: r["cells"] for r in status["runs"]}
    assert by_run[second] == {"cached": 1, "pending": 1, "failed": 1}
    assert by_run[first] == {"done": 8}
    assert "new-cell" not in store.complete_cells() and done_id in store.complete_cells()
    assert status["latest"]["run_id"] == second and status["latest"]["status"] == "running"

    result = CliRunner().invoke(cli, ["status", "--store", str(path)])
    assert result.exit_code == 0, result.output
    assert second in result.output and "failed" in result.output and "generations 240" in result.output
    assert "torch" in result.output  # last run's provenance
    as_json = CliRunner().invoke(cli, ["status", "--store", str(path), "--json"])
    assert '"pending": 1' in as_json.output
    # batch linking (an unchanged re-run links every cell at once)
    third = store.begin_run("third", {}, {})
    assert store.link_cells(third, [done_id, done_id]) == 1
    with pytest.raises(StoreError, match=r"cells not stored.*nope"):
        store.link_cells(third, ["nope", done_id])
    assert {r["run_id"]: r["cells"] for r in store.status()["runs"]}[third] == {"cached": 1}


def _cell_fields(store: Store, cell_id: str) -> dict[str, object]:
    import json

    row = store.cells().set_index("cell_id").loc[cell_id]
    return {
        "cell_id": cell_id,
        "method": row["method"],
        "method_label": row["method_label"],
        "params": json.loads(row["params"]),
        "finetuned": row["finetuned"],
        "benchmark": row["benchmark"],
    }


def test_unknown_run_and_cell_are_refused(fresh_store: Store) -> None:
    cell = CellRecord(cell_id="c", method="sft", finetuned="ft", benchmark="catqa")
    with pytest.raises(StoreError, match="no run 'nope'"):
        fresh_store.write_cell("nope", cell)
    run_id = fresh_store.begin_run("r", {}, {})
    with pytest.raises(StoreError, match="no cell 'c'"):
        fresh_store.add_verdicts("c", [Verdict(item_id="i", judge_id="j", judge_hash="h", label="harmful")])
    with pytest.raises(StoreError, match="not stored"):
        fresh_store.link_cell(run_id, "c")
    with pytest.raises(TypeError, match="CellRecord"):
        fresh_store.write_cell(run_id, {"cell_id": "c"})  # type: ignore[arg-type]
    # granular API: the same rows as write_cell, in separate transactions
    fresh_store.record_cell(run_id, cell)
    gen = GenerationRecord(
        item_id="i",
        benchmark="catqa",
        prompt_text="p",
        prompt_hash="ph",
        completion="x",
        model_hash="m",
        gen_config_hash="g",
        backend="dummy",
    )
    assert fresh_store.add_items("c", [gen]) == 1
    assert (
        fresh_store.add_verdicts("c", {"j": [Verdict(item_id="i", judge_id="j", judge_hash="h", label="harmful")]}) == 1
    )
    assert fresh_store.add_scores("c", [Score(benchmark="catqa", metric="harmfulness", value=1.0, n=1)]) == 1
    assert "c" not in fresh_store.complete_cells()
    fresh_store.finish_cell(run_id, "c")
    assert "c" in fresh_store.complete_cells()


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError) as info:
        Store(path)
    message = str(info.value)
    assert str(path) in message and "schema version 99" in message and f"≤ {SCHEMA_VERSION}" in message
    assert "upgrade" in message
    result = CliRunner().invoke(cli, ["leaderboard", "--store", str(path), "--out", str(tmp_path / "site")])
    assert isinstance(result.exception, StoreError)  # main() prints it as `error: ...` with exit 2
    assert not (tmp_path / "site").exists()  # refused before any work


def test_corrupted_store_file_is_refused(
    tmp_path: Path, synthetic_store: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(StoreError, match=f"{garbage}.*not a SQLite database"):
        Store(garbage)
    # damaged pages inside an otherwise valid store: caught by the integrity check on open
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(synthetic_store[0].read_bytes())
    with open(damaged, "r+b") as handle:
        handle.seek(4096 * 3)
        handle.write(os.urandom(4096 * 4))
    with pytest.raises(StoreError, match=f"store {damaged}.*(malformed|corrupted)"):
        Store(damaged)
    # a SQLite file from something else
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE something (x INTEGER)")
    with pytest.raises(StoreError, match="not a realign-bench store"):
        Store(foreign)
    # through the console script's main(): one line on stderr, exit 2, no traceback
    with pytest.raises(SystemExit) as exit_info:
        main(["status", "--store", str(garbage)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(f"error: store {garbage}") and "Traceback" not in err


def test_missing_store_for_readers(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="file not found"):
        Store(tmp_path / "absent.sqlite", create=False)
    assert not (tmp_path / "absent.sqlite").exists()


_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from lb_synth import write_synthetic_run
    from leaderboards import Store
    go = Path(sys.argv[4])
    while not go.exists():  # both writers start together
        time.sleep(0.01)
    store = Store(sys.argv[1])
    # shared cells (salt "") and private ones (salt = argv[2]): both kinds race
    write_synthetic_run(store, name="shared-" + sys.argv[2])
    write_synthetic_run(store, name="private-" + sys.argv[2], salt=sys.argv[2])
""")


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), salt, str(Path(__file__).parent), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for salt in ("a", "b")
    ]
    go.touch()
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    counts = _table_counts(path)
    assert counts["runs"] == 4
    assert counts["cells"] == 3 * CELLS_PER_RUN  # shared + private a + private b
    assert counts["run_cells"] == 4 * CELLS_PER_RUN
    assert counts["generations"] == 3 * ITEMS_PER_RUN
    store = Store(path, create=False)
    runs = {r["name"]: r for r in store.runs()}
    assert {r["status"] for r in runs.values()} == {"done"}
    # the two writers really overlapped in time (each run spans many write transactions)
    a_start, a_end = runs["shared-a"]["started_at"], runs["private-a"]["finished_at"]
    b_start, b_end = runs["shared-b"]["started_at"], runs["private-b"]["finished_at"]
    assert a_start < b_end and b_start < a_end
    assert len(store.complete_cells()) == 3 * CELLS_PER_RUN
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_urls(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'via-url.sqlite'}")
    assert store.path == tmp_path / "via-url.sqlite" and store.schema_version == SCHEMA_VERSION
    with pytest.raises(StoreError) as info:  # no driver or no server: either way a StoreError without the password
        Store("postgresql://alice:s3cret@127.0.0.1:1/realign")
    assert "s3cret" not in str(info.value) and "127.0.0.1" in str(info.value)


def test_postgres_driver_is_an_extra_the_readme_and_the_error_name() -> None:
    """Postgres URLs are supported: psycopg is the `postgres` extra, and both the README and a missing-driver
    error say how to add it."""
    import importlib.util
    import re

    root = Path(__file__).resolve().parents[2]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")  # tomllib needs 3.11; we support 3.10
    assert re.search(r'^postgres = \["psycopg\[binary\]>=3', pyproject, re.MULTILINE)
    assert "pip install -e '.[postgres]'" in (root / "README.md").read_text(encoding="utf-8")
    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed: no missing-driver error to check")
    with pytest.raises(StoreError, match=r"database driver missing .*pip install 'realign-bench\[postgres\]'"):
        Store("postgresql://alice@127.0.0.1:1/realign")


_KILLED_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from lb_synth import write_synthetic_run
    from leaderboards import Store
    store = Store(sys.argv[1])
    for round in range(1000):  # until killed
        write_synthetic_run(store, name=f"r{round}", salt=str(round))
""")


def test_sigkill_mid_write_leaves_only_whole_cells(tmp_path: Path) -> None:
    import signal
    import time

    path = tmp_path / "killed.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path), str(Path(__file__).parent)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait until some cells are committed, then kill mid-stream
            time.sleep(0.3)
            if path.exists() and proc.poll() is None:
                try:
                    with sqlite3.connect(path, timeout=30) as conn:
                        if conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0] >= 13:
                            break
                except sqlite3.OperationalError:
                    continue
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    store = Store(path)  # opens cleanly: the interrupted transaction is rolled back
    with sqlite3.connect(path) as conn:
        per_cell = dict(
            conn.execute(
                "SELECT c.cell_id, COUNT(g.item_id) FROM cells c LEFT JOIN generations g ON g.cell_id = c.cell_id "
                "GROUP BY c.cell_id"
            ).fetchall()
        )
        orphans = conn.execute(
            "SELECT COUNT(*) FROM generations WHERE cell_id NOT IN (SELECT cell_id FROM cells)"
        ).fetchone()[0]
        kinds = dict(conn.execute("SELECT cell_id, benchmark FROM cells").fetchall())
    assert orphans == 0 and len(per_cell) >= 13
    for cell, count in per_cell.items():  # every stored cell is whole: 40 items, or none for humaneval
        assert count == (0 if kinds[cell] == "humaneval" else N_ITEMS), (cell, count)
    assert store.complete_cells() == set(per_cell)
    assert store.runs()[-1]["status"] == "running"  # the killed run never finished
