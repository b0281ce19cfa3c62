"""`realign run`: validate, plan, open the store, execute, record what was done."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.sandbox import resolve_isolation
from harness.experiment._config import Experiment, load_experiment
from harness.experiment._executor import run_local, run_ray
from harness.experiment._lock import RunLock, process_identity
from harness.experiment._runner import describe_plan, plan_experiment
from harness.experiment._workspace import RunStats
from leaderboards import Store, collect_provenance

log = logging.getLogger("realign.run")


@dataclass
class RunResult:
    run_id: str | None
    stats: RunStats
    plan_rows: list[dict[str, Any]]
    log_path: Path | None
    store_location: str


def _attach_log_file(directory: Path) -> tuple[logging.Handler, Path]:
    path = directory / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("realign")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler, path


def run_experiment(
    experiment: Experiment | str | Path,
    *,
    only: dict[str, str] | None = None,
    dry_run: bool = False,
    executor: str | None = None,
    progress: bool = True,
    sandbox: str | None = None,
) -> RunResult:
    exp = experiment if isinstance(experiment, Experiment) else load_experiment(experiment)
    if sandbox is not None:
        exp = exp.model_copy(update={"sandbox": sandbox})
    if exp.allow_code_execution:  # refuse a missing namespace sandbox before any work (no fallback)
        resolve_isolation(exp.sandbox)
    # Everything that can be refused is refused here, before any merge or generation.
    plan, workspace = plan_experiment(exp, only, create=not dry_run)
    if dry_run:  # writes nothing: no store is created, no workspace folder, no hash memo
        return RunResult(
            None,
            RunStats(),
            describe_plan(plan, workspace, _existing_store(exp.store_location)),
            None,
            exp.store_location,
        )
    location = exp.store_location
    store_file = None if "://" in location else Path(location)
    with contextlib.ExitStack() as locks:
        locks.enter_context(RunLock(workspace.root))
        if store_file is not None:  # two output_dirs sharing one SQLite store: one run at a time too
            locks.enter_context(RunLock(store_file.parent, f"{store_file.name}.run.lock", "store", store_file))
        store = Store(location)
        store.mark_interrupted()
        rows = describe_plan(plan, workspace, store)
        return _execute(exp, plan, workspace, store, rows, only=only, executor=executor, progress=progress)


def _existing_store(location: str) -> Any:
    """The store for a read-only look (dry run), or None when the SQLite file does not exist yet."""
    if "://" not in location and not Path(location).exists():
        return None
    return Store(location, create=False)


def _execute(
    exp: Experiment,
    plan: Any,
    workspace: Any,
    store: Any,
    rows: list[dict[str, Any]],
    *,
    only: dict[str, str] | None,
    executor: str | None,
    progress: bool,
) -> RunResult:
    handler, log_path = _attach_log_file(workspace.root / "logs")
    stats = RunStats()
    run_id = store.begin_run(
        exp.name,
        exp.model_dump(mode="json"),
        collect_provenance(seeds={"seed": exp.seed}, extra={"process": process_identity()}),
    )
    log.info(
        "run %s: %d cells over %d checkpoints (executor %s)",
        run_id,
        len(plan.cells),
        len(plan.unique_jobs()),
        executor or exp.executor,
    )
    status = "failed"
    try:
        with _progress(progress, len(plan.cells)) as bar:
            if (executor or exp.executor) == "ray":
                run_ray(plan, workspace, store, run_id, stats, only=only, progress=bar)
            else:
                run_local(plan, workspace, store, run_id, stats, progress=bar)
        status = "done"
    finally:
        workspace.hashes.save()
        store.finish_run(run_id, status, counts=dict(stats.counts))
        log.info("run %s %s: %s", run_id, status, stats.summary())
        logging.getLogger("realign").removeHandler(handler)
        handler.close()
    return RunResult(run_id, stats, rows, log_path, exp.store_location)


class _Bar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)


class _progress:
    """A rich progress bar over cells (or nothing when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._progress: Any = None

    def __enter__(self) -> _Bar:
        if not self.enabled:
            return _Bar(None, None)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("cells"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        self._progress.start()
        return _Bar(self._progress, self._progress.add_task("cells", total=self.total))

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
