"""Execute a plan: materialise checkpoints, generate, judge, score, store — each step cached by content.

Every artifact is written to a temp name and renamed, or appended line by line with a `.done`
marker written last, so a run killed at any point resumes where it stopped and never counts an
item twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from harness.core.errors import ConfigError
from harness.experiment import _stages as stages
from harness.experiment._config import Experiment
from harness.experiment._faults import crash_point
from harness.experiment._plan import Cell, CheckpointJob, Plan, build_plan
from harness.experiment._workspace import RunStats, Workspace, done_marker

log = logging.getLogger("realign.run")


def plan_experiment(
    exp: Experiment, only: dict[str, str] | None = None, *, create: bool = True
) -> tuple[Plan, Workspace]:
    """The plan and its workspace; ``create=False`` (``--dry-run``) writes nothing to disk."""
    out = exp.output_path
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir {out}: exists and is not a directory; give a folder path")
    workspace = Workspace(out, create=False)
    plan = build_plan(exp, workspace.hashes, only)
    if create:
        workspace.create()
        workspace.hashes.save()
    return plan, workspace


def describe_plan(plan: Plan, workspace: Workspace, store: Any | None) -> list[dict[str, Any]]:
    """One row per cell with what is cached, for `--dry-run`."""
    rows = []
    stored = store.complete_cells() if store is not None else set()
    for cell in plan.cells:
        job = cell.job
        ckpt_cached = job.passthrough is not None or workspace.checkpoint(job.key).is_dir()
        gen_path = workspace.generations(cell.generation_key)
        model_scored = cell.resolved_benchmark.reads == "model"
        rows.append(
            {
                "cell": cell.cell_id[:12],
                "method": job.label,
                "finetuned": job.finetuned,
                "benchmark": cell.benchmark.key,
                "checkpoint": "cached" if ckpt_cached else ("passthrough" if job.passthrough else "merge"),
                "generations": "— (scores the model)"
                if model_scored
                else "cached"
                if done_marker(gen_path).exists()
                else ("resume" if gen_path.exists() else "generate"),
                "stored": "yes" if cell.cell_id in stored else "no",
            }
        )
    return rows


def run_job_cells(
    exp: Experiment,
    workspace: Workspace,
    store: Any,
    run_id: str,
    job: CheckpointJob,
    cells: list[Cell],
    stats: RunStats,
    on_cell: Callable[[Cell], None] | None = None,
) -> None:
    """All cells of one checkpoint: the unit of work an executor schedules."""
    complete = store.complete_cells()
    pending = [c for c in cells if c.cell_id not in complete]
    cached = [c for c in cells if c.cell_id in complete]
    if cached:
        store.link_cells(run_id, [c.cell_id for c in cached])
        stats.counts["cell_cached"] += len(cached)
        for cell in cached:
            if on_cell:
                on_cell(cell)
    if not pending:
        return
    model = stages.materialize(exp, workspace, job, stats)
    items = {c.cell_id: stages.cell_items(exp, c) for c in pending}
    generating = [(c, items[c.cell_id]) for c in pending if c.resolved_benchmark.reads == "generations"]
    stages.generate(exp, workspace, generating, model, stats)
    for cell in pending:
        stages.run_cell(exp, workspace, store, run_id, cell, model, stats, items[cell.cell_id])
        stats.counts["cell_stored"] += 1
        crash_point("store")
        if on_cell:
            on_cell(cell)
