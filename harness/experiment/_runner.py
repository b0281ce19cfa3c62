"""Execute a plan: materialise checkpoints, generate, judge, score, store — each step cached by content.

Every artifact is written to a temp name and renamed, or appended line by line with a `.done`
marker written last, so a run killed at any point resumes where it stopped and never counts an
item twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import ConfigError
from harness.experiment import _stages as stages
from harness.experiment._config import Experiment
from harness.experiment._faults import crash_point
from harness.experiment._hashcache import HashCache
from harness.experiment._plan import Cell, CheckpointJob, Plan, benchmark_for, build_plan

log = logging.getLogger("realign.run")


@dataclass
class RunStats:
    counts: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def summary(self) -> str:
        c = self.counts
        return (
            f"merges: {c['merge_done']} done, {c['merge_cached']} cached; "
            f"generations: {c['generate_done']} done, {c['generate_cached']} cached, {c['generate_resumed']} resumed; "
            f"judgments: {c['judge_done']} done, {c['judge_cached']} cached; "
            f"model scores: {c['model_score_done']} done, {c['model_score_cached']} cached; "
            f"cells stored: {c['cell_stored']} new, {c['cell_cached']} cached; {self.seconds:.1f} s"
        )


class Workspace:
    """Where one experiment's artifacts live (all content-addressed)."""

    SUBDIRS = ("checkpoints", "inputs", "generations", "judgments", "scores", "costs", "logs")

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
        if create:
            self.create()
        self.hashes = HashCache(root / "hashes.json")

    def create(self) -> None:
        """Make the workspace folders (not done for `--dry-run`, which writes nothing)."""
        for sub in self.SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def checkpoint(self, key: str) -> Path:
        return self.root / "checkpoints" / key

    def cost(self, key: str) -> Path:
        """Wall times of building checkpoint ``key`` (merge, mask training), kept for later runs."""
        return self.root / "costs" / f"{key}.json"

    def dense_input(self, model_hash: str) -> Path:
        return self.root / "inputs" / model_hash

    def generations(self, key: str) -> Path:
        return self.root / "generations" / f"{key}.jsonl"

    def model_scores(self, generation_key: str) -> Path:
        return self.root / "scores" / f"{generation_key}.json"

    def judgments(self, generation_key: str, judge_key: str) -> Path:
        return self.root / "judgments" / f"{generation_key}.{judge_key}.jsonl"


def done_marker(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def mark_done(path: Path, info: dict[str, Any]) -> None:
    marker = done_marker(path)
    tmp = marker.with_name(marker.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(info, sort_keys=True))
    os.replace(tmp, marker)


def plan_experiment(exp: Experiment, only: dict[str, str] | None = None, *,
                    create: bool = True) -> tuple[Plan, Workspace]:
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
        model_scored = benchmark_for(plan.experiment, cell.benchmark).reads == "model"
        rows.append({
            "cell": cell.cell_id[:12],
            "method": job.label,
            "finetuned": job.finetuned,
            "benchmark": cell.benchmark.key,
            "checkpoint": "cached" if ckpt_cached else ("passthrough" if job.passthrough else "merge"),
            "generations": "— (scores the model)" if model_scored else
                           "cached" if done_marker(gen_path).exists() else ("resume" if gen_path.exists() else "generate"),
            "stored": "yes" if cell.cell_id in stored else "no",
        })
    return rows


def run_job_cells(
    exp: Experiment, workspace: Workspace, store: Any, run_id: str, job: CheckpointJob, cells: list[Cell],
    stats: RunStats, on_cell: Callable[[Cell], None] | None = None,
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
    for cell in pending:
        stages.run_cell(exp, workspace, store, run_id, cell, model, stats)
        stats.counts["cell_stored"] += 1
        crash_point("store")
        if on_cell:
            on_cell(cell)
