"""Executors schedule checkpoint groups (all cells of one realigned model) — locally, or as Ray tasks."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from harness.core.errors import ConfigError
from harness.experiment._config import Experiment
from harness.experiment._plan import Cell, CheckpointJob, Plan, ResolvedModel
from harness.experiment._runner import plan_experiment, run_job_cells
from harness.experiment._stages import close_backends, dense_input
from harness.experiment._workspace import RunStats, Workspace
from leaderboards import Store

log = logging.getLogger("realign.run")


def groups(plan: Plan) -> list[tuple[CheckpointJob, list[Cell]]]:
    """Cells grouped by checkpoint key: one model load serves all of its benchmarks."""
    by_key: dict[str, list[Cell]] = {}
    jobs: dict[str, CheckpointJob] = {}
    for cell in plan.cells:
        by_key.setdefault(cell.job.key, []).append(cell)
        jobs.setdefault(cell.job.key, cell.job)
    # pairwise references first: their answers are then on disk when the others are judged against them
    references = {cell.reference.job.key for cell in plan.cells if cell.reference is not None}
    ordered = sorted(by_key, key=lambda k: k not in references)
    return [(jobs[k], by_key[k]) for k in ordered]


def run_local(plan: Plan, workspace: Workspace, store: Any, run_id: str, stats: RunStats, progress: Any = None) -> None:
    try:
        for job, cells in groups(plan):
            run_job_cells(
                plan.experiment,
                workspace,
                store,
                run_id,
                job,
                cells,
                stats,
                on_cell=(lambda _c: progress.advance()) if progress else None,
            )
    finally:
        close_backends()


def _ray_group(exp_json: str, only: dict[str, str], job_key: str, run_id: str) -> dict[str, int]:
    """Body of one Ray task: re-plan in the worker (cheap, cached hashes) and run one checkpoint group."""

    exp = Experiment.model_validate_json(exp_json)
    plan, workspace = plan_experiment(exp, only)
    stats = RunStats()
    store = Store(exp.store_location)
    try:
        for job, cells in groups(plan):
            if job.key == job_key:
                run_job_cells(exp, workspace, store, run_id, job, cells, stats)
    finally:
        close_backends()
    return dict(stats.counts)


def prepare_shared_inputs(plan: Plan, workspace: Workspace, stats: RunStats) -> None:
    """Merge every adapter model the groups read into its dense cached copy, once, before fan-out:
    two workers must never build the same cached input at the same time."""
    needed: dict[str, ResolvedModel] = {}
    for job in plan.unique_jobs():
        for model in (*job.inputs.values(), *job.finetuned_models, *([job.passthrough] if job.passthrough else [])):
            if model.adapter is not None:
                needed.setdefault(model.hash, model)
    for model in needed.values():
        dense_input(workspace, model, stats)


def run_ray(
    plan: Plan,
    workspace: Workspace,
    store: Any,
    run_id: str,
    stats: RunStats,
    only: dict[str, str] | None = None,
    num_gpus_per_group: float | None = None,
    address: str | None = None,
    progress: Any = None,
) -> None:
    """One Ray task per checkpoint group that still has work; each requests a GPU when the cluster has
    them, else one CPU (so a 2-core machine runs two groups at once). Groups whose cells are all in
    the store are linked here without starting Ray, so a cached re-run costs no cluster start-up."""
    complete = store.complete_cells()
    grouped = groups(plan)
    pending: list[CheckpointJob] = []
    for job, cells in grouped:
        if all(c.cell_id in complete for c in cells):
            run_job_cells(
                plan.experiment,
                workspace,
                store,
                run_id,
                job,
                cells,
                stats,
                on_cell=(lambda _c: progress.advance()) if progress else None,
            )
        else:
            pending.append(job)
    if not pending:
        return
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError("--executor ray needs Ray: pip install 'realign-bench[ray]'") from exc
    prepare_shared_inputs(plan, workspace, stats)
    workspace.hashes.save()  # workers re-plan from the saved hashes instead of re-hashing every model
    exp: Experiment = plan.experiment
    cells_of = {job.key: cells for job, cells in grouped}
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        gpus = num_gpus_per_group
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        task = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=0)(_ray_group)
        # base_dir is excluded from dumps (it is not part of the identity) but the worker needs it.
        exp_json = json.dumps({**exp.model_dump(mode="json"), "base_dir": exp.base_dir})
        # Methods that train on data (SOMF's masks) first: the longest groups start early and overlap
        # the short ones.
        pending.sort(key=lambda job: not job.info.trains)
        # Pairwise references form a first wave: the others read their generations, and two workers
        # must never generate the same reference file at once.
        references = {c.reference.job.key for c in plan.cells if c.reference is not None}
        waves = [[j for j in pending if j.key in references], [j for j in pending if j.key not in references]]
        for wave in (w for w in waves if w):
            refs = {task.remote(exp_json, only or {}, job.key, run_id): job for job in wave}
            waiting = list(refs)
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                job = refs[done[0]]
                stats.counts.update(Counter(ray.get(done[0])))
                log.info("checkpoint %s on %s: %d cells done", job.label, job.finetuned, len(cells_of[job.key]))
                if progress:
                    for _ in cells_of[job.key]:
                        progress.advance()
    finally:
        if started_here:
            ray.shutdown()
