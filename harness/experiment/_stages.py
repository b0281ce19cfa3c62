"""The four stage steps of one cell. This is the only module of the runner that calls into
realign_methods, harness.generate, benchmarks and leaderboards; each call goes through their
public faces and reads/writes files, so any stage can be re-run alone."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.judges import clear_judge_cache
from benchmarks.scoring import score_with_items, score_with_model_items
from harness.core.checkpoints import CheckpointReader, LoraAdapter, atomic_write_json, merge_adapter
from harness.core.errors import ConfigError
from harness.core.hashing import hash_value
from harness.core.paths import cache_dir
from harness.core.records import GenerationRecord, ItemScore, Score, Verdict, dedupe_by_key, read_jsonl
from harness.experiment._faults import crash_point
from harness.experiment._plan import Cell, CheckpointJob, ResolvedModel, data_path_for
from harness.experiment._workspace import RunStats, Workspace, done_marker, mark_done
from harness.generate import GenerationFile, check_model_weights, generate_files, get_backend
from leaderboards import CellRecord
from realign_methods import MergeSpec, merge

if TYPE_CHECKING:
    from harness.experiment._config import Experiment

log = logging.getLogger("realign.run")


@dataclass(frozen=True)
class Materialized:
    """A model ready for generation: a dense directory, optionally with a LoRA adapter on top."""

    path: Path
    adapter: Path | None
    key: str
    # wall time that built this checkpoint (from its cost record when it was built in an earlier run);
    # mask training (SOMF) is counted apart from the merge itself. None: not recorded.
    merge_seconds: float | None = None
    train_seconds: float | None = None
    # the calibration stage (methods that declare one), apart from the merge; 0 when it was reused
    calibration_seconds: float | None = None
    calibration_examples: int | None = None


def dense_input(workspace: Workspace, model: ResolvedModel, stats: RunStats, *, allow_pickle: bool = False) -> Path:
    """The dense weights of an input model (base + adapter merged once, cached by content)."""
    if model.adapter is None:
        return model.path
    out = workspace.dense_input(model.hash)
    if not out.is_dir():
        log.info("dense copy of %s + adapter %s -> %s", model.path, model.adapter, out)
        merge_adapter(
            CheckpointReader(model.path, allow_pickle=allow_pickle),
            LoraAdapter.load(model.adapter, allow_pickle=allow_pickle),
            out,
        )
        stats.counts["adapter_merge_done"] += 1
    return out


def materialize(exp: Experiment, workspace: Workspace, job: CheckpointJob, stats: RunStats) -> Materialized:
    passthrough = job.passthrough
    if passthrough is not None:  # keyed by the model itself, so its dense copy is the shared input copy
        return Materialized(passthrough.path, passthrough.adapter, passthrough.hash, 0.0, 0.0, 0.0, 0)
    out = workspace.checkpoint(job.key)
    cost_path = workspace.cost(job.key)
    if out.is_dir():
        stats.counts["merge_cached"] += 1
        cost = json.loads(cost_path.read_text(encoding="utf-8")) if cost_path.is_file() else {}
        # a cost record from before the calibration stage existed: that merge calibrated nothing
        return Materialized(
            out,
            None,
            job.key,
            cost.get("merge_seconds"),
            cost.get("train_seconds"),
            cost.get("calibration_seconds", 0.0),
            cost.get("calibration_examples", 0),
        )
    pickle = exp.allow_pickle
    spec_fields: dict[str, Any] = {
        role: dense_input(workspace, model, stats, allow_pickle=pickle) for role, model in job.inputs.items()
    }
    finetuned = job.finetuned_models
    if job.use_adapter:  # the method reads the LoRA factors; a dense copy would be refused as an extra input
        spec_fields["adapters"] = [m.adapter for m in finetuned if m.adapter is not None]
        bases = {m.path.resolve() for m in finetuned if m.adapter is not None}
        if len(bases) == 1:  # the run knows what the adapters apply to: say so rather than have it guessed
            spec_fields["adapter_base"] = str(bases.pop())
    else:
        spec_fields["finetuned"] = [dense_input(workspace, m, stats, allow_pickle=pickle) for m in finetuned]
    crash_point("merge")
    log.info("merge %s for %s -> %s", job.label, job.finetuned, out)
    masks_before = _mask_dirs()
    started = time.perf_counter()
    merge(
        MergeSpec(
            method=job.method,
            params=job.params,
            seed=exp.seed,
            out=out,
            allow_pickle=pickle,
            allow_nonfinite=exp.allow_nonfinite,
            **spec_fields,
        )
    )
    total = time.perf_counter() - started
    train = _training_seconds(_mask_dirs() - masks_before)
    calibration_seconds, calibration_examples = _calibration_cost(out)
    cost = {
        "merge_seconds": max(total - train - calibration_seconds, 0.0),
        "train_seconds": train,
        "calibration_seconds": calibration_seconds,
        "calibration_examples": calibration_examples,
    }
    atomic_write_json(cost_path, cost)
    stats.counts["merge_done"] += 1
    crash_point("merge")
    return Materialized(
        out, None, job.key, cost["merge_seconds"], cost["train_seconds"], calibration_seconds, calibration_examples
    )


def _calibration_cost(out: Path) -> tuple[float, int]:
    """(wall seconds, examples) of the calibration behind a merge, from its provenance; a calibration
    reused from the cache costs no seconds here (the run that computed it paid for them)."""
    provenance = out / "realign_merge.json"
    record = json.loads(provenance.read_text(encoding="utf-8")).get("calibration") if provenance.is_file() else None
    if not record:
        return 0.0, 0
    cost = record["cost"]
    return (0.0 if cost.get("reused") else float(cost["seconds"])), int(cost["examples"])


def _mask_dirs() -> set[Path]:
    """SOMF's trained-mask cache entries (a merge that trains a mask adds one)."""
    root = cache_dir() / "somf"
    return {p for p in root.iterdir() if p.is_dir()} if root.is_dir() else set()


def _training_seconds(new_masks: set[Path]) -> float:
    """Training wall time of masks a merge trained (from their summaries). A mask reused from the
    cache adds nothing: the run that trained it paid for it."""
    total = 0.0
    for mask in new_masks:
        summary = mask / "somf.json"
        if summary.is_file():
            total += float(json.loads(summary.read_text(encoding="utf-8")).get("train_seconds") or 0.0)
    return total


def marker_seconds(path: Path) -> float | None:
    """The wall time a finished artifact's ``.done`` marker records (None for markers older than that)."""
    marker = done_marker(path)
    if not marker.is_file():
        return None
    value = json.loads(marker.read_text(encoding="utf-8")).get("seconds")
    return float(value) if value is not None else None


def _items(exp: Experiment, bench: Any, cell: Cell) -> list[Any]:
    b = cell.benchmark
    return list(
        bench.load(
            limit=b.limit,
            sample=b.sample,
            seed=b.seed,
            languages=b.languages,
            categories=b.categories,
            data_path=data_path_for(exp, b),
        )
    )


def generate(
    exp: Experiment,
    workspace: Workspace,
    cells: list[tuple[Cell, list[Any]]],
    model: Materialized,
    stats: RunStats,
) -> None:
    """Fill the generations file of every (cell, items) given that is not done yet, all in one pass:
    the checkpoint's benchmarks share its decode batches (one batch of ``batch_size`` prompts spans
    benchmarks, which a CPU decodes several times faster per prompt than many small batches)."""
    todo = []
    seen: set[Path] = set()
    for cell, items in cells:
        out = workspace.generations(cell.generation_key)
        if out in seen:  # cells that differ only past generation (judges, pairwise) share one file
            continue
        seen.add(out)
        if done_marker(out).exists():
            stats.counts["generate_cached"] += 1
            continue
        stats.counts["generate_resumed" if out.exists() else "generate_done"] += 1
        todo.append(GenerationFile(items, out, cell.benchmark.system_prompt))
    if not todo:
        return
    seconds = generate_files(
        model.path,
        todo,
        backend=backend_for(exp, model),
        config=exp.generation.decoding(exp.seed),
        adapter=model.adapter,
        progress=False,
    )
    crash_point("generate")
    # a resumed file records the resuming pass only: the killed pass's time is lost with it
    for file, spent in zip(todo, seconds, strict=True):
        mark_done(file.out_path, {"items": len(file.items), "seconds": spent})


_backends: dict[tuple[str, str, str | None], Any] = {}


def backend_for(exp: Experiment, model: Materialized) -> Any:
    """One backend per model for the whole run (vLLM start-up is expensive)."""
    key = (exp.generation.backend, str(model.path), str(model.adapter) if model.adapter else None)
    if key not in _backends:
        for old in list(_backends):  # keep one model resident: memory matters more than reuse
            _backends.pop(old).close()
        _backends[key] = get_backend(
            exp.generation.backend,
            model.path,
            adapter=model.adapter,
            allow_pickle=exp.allow_pickle,
            **exp.generation.backend_options,
        )
    return _backends[key]


def close_backends() -> None:
    """Release what one run kept loaded: generation backends and judges (a judge can change between runs)."""
    while _backends:
        _backends.popitem()[1].close()
    clear_judge_cache()


def judge(
    exp: Experiment, workspace: Workspace, cell: Cell, generations: list[Any], items: dict[str, Any], stats: RunStats
) -> dict[str, Path]:
    """Judge the cell's generations with every judge of the experiment (each cached by its own hash)."""
    out: dict[str, Path] = {}
    for name in exp.judges:
        judge_obj = cell.judges[name]
        path = workspace.judgments(cell.generation_key, hash_value({"id": judge_obj.id, "hash": judge_obj.hash}))
        out[judge_obj.id] = path
        if done_marker(path).exists():
            stats.counts["judge_cached"] += 1
            continue
        stats.counts["judge_done"] += 1
        started = time.perf_counter()
        judge_obj.judge_to_file(generations, items, path, after_batch=lambda: crash_point("judge"))
        mark_done(path, {"verdicts": len(generations), "seconds": time.perf_counter() - started})
    return out


def judge_pairwise(
    exp: Experiment, workspace: Workspace, cell: Cell, generations: list[Any], items: dict[str, Any], stats: RunStats
) -> tuple[str, list[Any], float | None]:
    """Judge the cell's answers against its reference cell's (win = less harmful) with the benchmark's
    primary judge.

    The reference's generations come from its own cached file (its group runs first); the verdicts are
    cached by (generations, judge, reference generations). Returns (store judge id, verdicts, seconds):
    the id names the reference, so pairwise verdicts never collide with the same judge's absolute ones.
    """

    assert cell.reference is not None and exp.pairwise is not None
    ref = cell.reference
    # the same benchmark entry: the cell's own items, in their order
    ref_path = workspace.generations(ref.generation_key)
    if not done_marker(ref_path).exists():
        generate(exp, workspace, [(ref, list(items.values()))], materialize(exp, workspace, ref.job, stats), stats)
    reference = dedupe_by_key(
        read_jsonl(ref_path, GenerationRecord),
        lambda g: (g.item_id, g.sample_index),
        source=str(ref_path),
        allowed=set(items),
    )
    name = exp.primary_judge(cell.benchmark) or exp.judges[0]
    judge_obj = cell.judges[name]
    path = workspace.judgments(
        cell.generation_key, hash_value({"id": judge_obj.id, "hash": judge_obj.hash, "reference": ref.generation_key})
    )
    if done_marker(path).exists():
        stats.counts["pairwise_cached"] += 1
    else:
        stats.counts["pairwise_done"] += 1
        started = time.perf_counter()
        judge_obj.judge_pairs_to_file(generations, reference, items, path, after_batch=lambda: crash_point("judge"))
        mark_done(path, {"verdicts": len(generations), "seconds": time.perf_counter() - started})
    store_id = f"pairwise:{exp.pairwise.reference}/{judge_obj.id}"
    verdicts = [
        v.model_copy(update={"judge_id": store_id})
        for v in dedupe_by_key(
            read_jsonl(path, Verdict), lambda v: (v.item_id, v.sample_index), source=str(path), allowed=set(items)
        )
    ]
    return store_id, verdicts, marker_seconds(path)


def model_scores(
    workspace: Workspace,
    cell: Cell,
    model: Materialized,
    items: list[Any],
    stats: RunStats,
    bench: Any,
    *,
    allow_pickle: bool = False,
) -> tuple[list[Any], list[Any], float | None]:
    """(scores, per-item scores, seconds) of a model-reading scorer, cached like generations (by
    checkpoint × benchmark), so a cell re-made for another reason (a changed judge) does not run the
    model again."""

    path = workspace.model_scores(cell.generation_key)
    cached = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if isinstance(cached, dict):  # a bare list is the older cache without per-item scores: score again
        stats.counts["model_score_cached"] += 1
        return (
            [Score.model_validate(s) for s in cached["scores"]],
            [ItemScore.model_validate(s) for s in cached["items"]],
            cached.get("seconds"),
        )
    started = time.perf_counter()
    dense = dense_input(
        workspace, ResolvedModel("eval", model.path, model.adapter, model.key), stats, allow_pickle=allow_pickle
    )
    check_model_weights(dense, allow_pickle=allow_pickle)  # the scorer loads it: same rules as generation
    scores, per_item = score_with_model_items(bench, dense, items)
    seconds = time.perf_counter() - started
    atomic_write_json(
        path,
        {
            "scores": [s.model_dump(mode="json") for s in scores],
            "items": [s.model_dump(mode="json") for s in per_item],
            "seconds": seconds,
        },
    )
    stats.counts["model_score_done"] += 1
    return scores, per_item, seconds


def cell_items(exp: Experiment, cell: Cell) -> list[Any]:
    """The benchmark items of ``cell`` (its sample, languages and categories)."""
    return _items(exp, cell.resolved_benchmark, cell)


def run_cell(
    exp: Experiment,
    workspace: Workspace,
    store: Any,
    run_id: str,
    cell: Cell,
    model: Materialized,
    stats: RunStats,
    items: list[Any] | None = None,
) -> None:
    """Generate (unless done), judge, score and store one cell; ``items``: its :func:`cell_items`."""
    bench = cell.resolved_benchmark
    items = items if items is not None else _items(exp, bench, cell)
    by_id = {item.id: item for item in items}
    generations: list[GenerationRecord] = []
    verdicts: dict[str, list[Verdict]] = {}
    judge_ids: list[str] = []
    primary_judge: Any = None  # the judge whose verdicts score the cell (recorded on it)
    item_scores: list[Any] = []
    # a stage the cell does not have costs 0 (a model-scored benchmark generates nothing); None = not recorded
    costs: dict[str, Any] = {
        "merge_seconds": model.merge_seconds,
        "train_seconds": model.train_seconds,
        "calibration_seconds": model.calibration_seconds,
        "calibration_examples": model.calibration_examples,
        "generate_seconds": 0.0,
        "judge_seconds": 0.0,
        "tokens_generated": 0,
    }
    if bench.reads == "generations":
        gen_path = workspace.generations(cell.generation_key)
        if not done_marker(gen_path).exists():  # not filled by the checkpoint's shared pass (run_job_cells)
            generate(exp, workspace, [(cell, items)], model, stats)
        costs["generate_seconds"] = marker_seconds(gen_path)
        # one record per (item, sample) whatever the file holds: n never exceeds the item count
        generations = dedupe_by_key(
            read_jsonl(gen_path, GenerationRecord),
            lambda g: (g.item_id, g.sample_index),
            source=str(gen_path),
            allowed=set(by_id),
        )
        if bench.kind == "safety":
            judge_seconds: list[float | None] = []
            for judge_id, path in judge(exp, workspace, cell, generations, by_id, stats).items():
                verdicts[judge_id] = dedupe_by_key(
                    read_jsonl(path, Verdict),
                    lambda v: (v.item_id, v.sample_index),
                    source=str(path),
                    allowed=set(by_id),
                )
                judge_ids.append(judge_id)
                judge_seconds.append(marker_seconds(path))
            if cell.reference is not None:  # SOMF-style: against the reference's answers (experiment `pairwise:`)
                pair_id, verdicts[pair_id], pair_seconds = judge_pairwise(
                    exp, workspace, cell, generations, by_id, stats
                )
                judge_seconds.append(pair_seconds)
            costs["judge_seconds"] = None if None in judge_seconds else sum(s for s in judge_seconds if s is not None)
        primary_name = exp.primary_judge(cell.benchmark)
        if judge_ids and primary_name is not None:
            primary_judge = cell.judges[primary_name]
        primary = verdicts[primary_judge.id] if primary_judge is not None else None
        if bench.scorer == "over_refusal":  # refused-or-not is the refusal judge's call, not a content judge's
            refusal_ids = [j for j in judge_ids if j.startswith("refusal/")]
            if not refusal_ids:
                raise ConfigError(
                    f"benchmark {bench.name!r} measures over-refusal: add the refusal judge to "
                    f"`judges` (have: {', '.join(judge_ids) or 'none'})"
                )
            primary = verdicts[refusal_ids[0]]
        started = time.perf_counter()
        scores, item_scores = score_with_items(
            bench,
            generations,
            primary,
            by_id,
            allow_code_execution=exp.allow_code_execution,
            sandbox_options={"isolation": exp.sandbox},
        )
        costs["score_seconds"] = time.perf_counter() - started
        costs["tokens_generated"] = (
            sum(g.num_tokens or 0 for g in generations)
            if generations and all(g.num_tokens is not None for g in generations)
            else None
        )
    else:  # log-likelihood scorers read the model itself, not generations
        scores, item_scores, costs["score_seconds"] = model_scores(
            workspace, cell, model, items, stats, bench, allow_pickle=exp.allow_pickle
        )
    record = CellRecord(
        cell_id=cell.cell_id,
        method=cell.job.method,
        method_label=cell.job.label,
        reference_role=cell.job.info.reference_role,
        params=cell.job.params,
        finetuned=cell.job.finetuned,
        task=cell.job.task,
        checkpoint_hash=cell.job.key,
        benchmark=bench.name,
        benchmark_label=cell.benchmark.key,
        benchmark_kind="safety" if bench.kind == "safety" else "utility",
        benchmark_options=cell.benchmark.model_dump(mode="json"),
        backend=exp.generation.backend,
        gen_config_hash=generations[0].gen_config_hash if generations else None,
        judge_id=primary_judge.id if primary_judge else None,
        judge_hash=primary_judge.hash if primary_judge else None,
        # the leaderboard keeps these out of plain harmfulness: over-refusal, and jailbreak attack success
        primary_metric="over_refusal"
        if bench.scorer == "over_refusal"
        else ("attack_success" if bench.spec.jailbreaks else None),
        **costs,
    )
    crash_point("store")
    store.write_cell(run_id, record, generations, verdicts, scores, item_scores=item_scores, items=items)
