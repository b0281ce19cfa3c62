"""Planning: expand the experiment into checkpoint jobs and cells, each named by a content hash.

A checkpoint job is one realigned model (method variant × fine-tuned model); its key hashes the
method, its parameters, the seed and the content hashes of every input, so an unchanged input
gives the same key and a changed one a new key. A cell is a checkpoint × a benchmark; its id also
hashes the benchmark options, the generation settings and the judges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import get_benchmark, is_spec_path
from benchmarks.judges import cached_judge, get_judge_class
from harness.core.checkpoints import CheckpointReader, LoraAdapter, adapter_base_path, is_adapter_dir
from harness.core.checkpoints import resolve_model as resolve_model_path
from harness.core.checkpoints._gguf import MODEL_ALIASES
from harness.core.errors import CheckpointError, ConfigError, RealignError, name_unknown
from harness.core.hashing import hash_value
from harness.core.roles import ReferenceRole
from harness.experiment._config import BenchmarkEntry, Experiment, FinetunedModel, ModelRef
from harness.experiment._hashcache import HashCache
from harness.generate._backend import check_backend_options
from realign_methods import Method, MethodInfo, Role, get_method

ORIGINAL = "original"  # pseudo-method: the model before safety alignment, evaluated as a baseline row
#: the reference row of ``models.original``: planned by the experiment (not listed under `methods:`)
ORIGINAL_INFO = MethodInfo(
    name=ORIGINAL,
    summary="The model before safety alignment, evaluated unchanged.",
    reference_role=ReferenceRole.ORIGINAL,
)


@dataclass(frozen=True)
class ResolvedModel:
    role: str
    path: Path
    adapter: Path | None
    hash: str

    @property
    def needs_merge(self) -> bool:
        return self.adapter is not None


@dataclass(frozen=True)
class CheckpointJob:
    key: str
    info: MethodInfo  # the method's declaration (ORIGINAL_INFO for the original model)
    label: str
    params: dict[str, Any]
    finetuned: str  # fine-tuned model name ("-" for the original model)
    task: str | None
    inputs: dict[str, ResolvedModel]
    finetuned_models: tuple[ResolvedModel, ...]
    use_adapter: bool  # the method reads the fine-tune's LoRA adapter rather than its dense weights
    implementation: Method | None = None  # the resolved method instance (None for ORIGINAL)

    @property
    def method(self) -> str:
        """Canonical method name (what the store and ``--only method=`` see)."""
        return self.info.name

    @property
    def passthrough(self) -> ResolvedModel | None:
        """The input evaluated as-is, for reference rows that do not change weights."""
        role = self.info.reference_role
        if role is None:
            return None
        if role is ReferenceRole.FINETUNED:
            return self.finetuned_models[0]
        return self.inputs[role.value]


@dataclass(frozen=True)
class Cell:
    cell_id: str
    job: CheckpointJob
    benchmark: BenchmarkEntry
    generation_key: str
    # the cell whose answers this one's are judged against (experiment `pairwise:`), same benchmark
    reference: Cell | None = None
    # what the planner resolved and checked, so the stages never resolve a name again
    resolved_benchmark: Any = None  # the Benchmark of ``benchmark`` (benchmark_for)
    judges: Mapping[str, Any] = field(default_factory=dict)  # experiment judge name -> built judge


@dataclass
class Plan:
    experiment: Experiment
    jobs: list[CheckpointJob]
    cells: list[Cell]
    warnings: list[str] = field(default_factory=list)

    def unique_jobs(self) -> list[CheckpointJob]:
        seen: dict[str, CheckpointJob] = {}
        for job in self.jobs:
            seen.setdefault(job.key, job)
        return list(seen.values())


def resolve_model(exp: Experiment, role: str, ref: ModelRef, hashes: HashCache) -> ResolvedModel:

    where = f"models.{role}"
    if ref.path.strip().lower() in MODEL_ALIASES:
        try:
            path = resolve_model_path(ref.path)
        except Exception as exc:  # the bundled model could not be imported: say so, before any work
            raise ConfigError(f"{where}.path: cannot import the bundled model {ref.path!r}: {exc}") from exc
    else:
        path = exp.resolve(ref.path)
    if not path.exists():
        raise ConfigError(f"{where}.path: {path} does not exist")
    adapter = exp.resolve(ref.adapter) if ref.adapter else None
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise ConfigError(f"{where}.adapter: {adapter} is not a PEFT adapter directory (no adapter_config.json)")
    if adapter is None:
        path, adapter = _adapter_as_model(exp, where, path)
    _check_weights(exp, where, path, adapter)
    digest = hash_value({"model": hashes.dir_hash(path), "adapter": hashes.dir_hash(adapter) if adapter else None}, 32)
    return ResolvedModel(role=role, path=path, adapter=adapter, hash=digest)


def _adapter_as_model(exp: Experiment, where: str, path: Path) -> tuple[Path, Path | None]:
    """``(path, None)`` for a model; for an adapter folder given as the model, ``(its base, the folder)``
    with the base its adapter_config.json names (a local model or the bundled model's name)."""
    if not is_adapter_dir(path):
        return path, None
    try:
        base = adapter_base_path(LoraAdapter.load(path, allow_pickle=exp.allow_pickle))
    except CheckpointError as exc:
        raise CheckpointError(f"{where}.path: {exc}") from None
    if base is None:
        raise ConfigError(
            f"{where}.path: {path} is a PEFT LoRA adapter, not a model, and its adapter_config.json names no local "
            f"base model (base_model_name_or_path); set {where}.path to the base model and {where}.adapter to {path}"
        )
    return base, path


def _check_weights(exp: Experiment, where: str, path: Path, adapter: Path | None) -> None:
    """A model path must hold weights (not a text file or an empty folder; pickle only if allowed),
    and an adapter must fit that model; read from the headers, so before any work."""
    try:
        with CheckpointReader(path, allow_pickle=exp.allow_pickle) as reader:
            if adapter is not None:
                LoraAdapter.load(adapter, allow_pickle=exp.allow_pickle).check_base(reader)
    except CheckpointError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def benchmark_for(exp: Experiment, entry: BenchmarkEntry) -> Any:
    """The Benchmark of an experiment entry: registered by name, or a spec file relative to the
    experiment file, with the entry's column mapping. Every stage resolves it here (never by the
    spec's own name, which is not registered)."""
    name = str(exp.resolve(entry.name)) if is_spec_path(entry.name) else entry.name
    return get_benchmark(name, **entry.options.given())


def data_path_for(exp: Experiment, entry: BenchmarkEntry) -> Path | None:
    return exp.resolve(entry.data_path) if entry.data_path else None


def check_generation(exp: Experiment) -> None:
    """The generation settings as the backend will see them: decoding config and backend options."""
    from pydantic import ValidationError

    g = exp.generation
    try:
        g.decoding(exp.seed)
    except ValidationError as exc:
        raise ConfigError(f"generation: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from None
    check_backend_options(g.backend, g.backend_options, "generation.backend_options")


def _method(name: str, params: dict[str, Any], where: str) -> tuple[Method, dict[str, Any]]:
    """The method instance and its parameters with defaults filled (ConfigError names the entry)."""
    try:
        method = get_method(name)
        full = method.validate(params).model_dump(mode="json")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return method, full


def method_inputs(
    method: Any, params: dict[str, Any], models: dict[str, ResolvedModel], ft: ResolvedModel, where: str
) -> tuple[dict[str, ResolvedModel], bool, dict[str, Any]]:
    """Which experiment models feed a method: (role -> model, pass the fine-tune as adapter?, extra params).

    Fusion rules get the aligned model as their anchor (task vectors relative to θ_A); methods that
    work in LoRA-factor space get the fine-tune's adapter, the others its dense weights.
    """
    info = method.info
    accepted = info.accepted_inputs
    by_setting = info.adapter_params.setting
    use_adapter = (
        ft.adapter is not None
        and Role.ADAPTERS in accepted
        and (
            Role.FINETUNED not in accepted
            or (bool(by_setting) and params.get(by_setting) in info.adapter_params.adapter_values)
        )
    )
    inputs: dict[str, ResolvedModel] = {}
    for role in ("aligned", "unaligned"):
        if role in accepted and role in models:
            inputs[role] = models[role]
    wants_base = "base" in info.required or ("base" in accepted and ("aligned" not in inputs or use_adapter))
    if wants_base and "base" in models:
        inputs["base"] = models["base"]
    extra: dict[str, Any] = {}
    receiver = info.adapter_params.aligned_adapter
    if use_adapter and receiver and params.get(receiver) is None:
        aligned = models.get("aligned")
        # Only an adapter on the same base as the fine-tune's is one it can have continued from; a
        # fine-tune adapter over the dense aligned model already is the update relative to θ_A.
        if aligned is not None and aligned.adapter is not None and aligned.path.resolve() == ft.path.resolve():
            extra[receiver] = str(aligned.adapter)
    given = {role: 1 for role in inputs} | {("adapters" if use_adapter else "finetuned"): 1}
    try:
        method.check_inputs(given)
        method.check_params_inputs(method.validate(params), given)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc} — add them under `models:`") from None
    return inputs, use_adapter, extra


@dataclass(frozen=True)
class _CheckedBenchmarks:
    resolved: dict[str, Any]  # entry label -> Benchmark
    spec_contents: dict[str, Any]  # entry label -> spec file contents (an edited spec makes new generations)


@dataclass(frozen=True)
class _CheckedJudges:
    built: dict[str, Any]  # experiment judge name -> judge
    identities: list[dict[str, str]]  # id and content hash of each, in the cells' identity


def build_plan(exp: Experiment, hashes: HashCache, only: dict[str, str] | None = None) -> Plan:
    """Validate everything cheap-to-check and expand the matrix. Raises ConfigError before any work."""
    only = only or {}
    check_generation(exp)
    benchmarks = _check_benchmarks(exp)
    judges = _check_judges(exp, benchmarks)
    models, finetuned = _resolve_models(exp, hashes)
    all_jobs = _plan_jobs(exp, models, finetuned)
    jobs = [j for j in all_jobs if _matches(j, only)]
    cells = _plan_cells(exp, jobs, all_jobs, benchmarks, judges, only)
    if not cells:
        raise ConfigError(f"--only {only} selects no cell of the experiment")
    return Plan(experiment=exp, jobs=jobs, cells=cells)


def _check_benchmarks(exp: Experiment) -> _CheckedBenchmarks:
    """Every benchmark entry resolves and loads one item (data files, languages, categories: local, cheap)."""
    resolved: dict[str, Any] = {}
    spec_contents: dict[str, Any] = {}
    for index, bench in enumerate(exp.benchmarks):
        try:
            benchmark = benchmark_for(exp, bench)
            benchmark.load(
                limit=1, languages=bench.languages, categories=bench.categories, data_path=data_path_for(exp, bench)
            )
        except RealignError as exc:
            raise ConfigError(f"benchmarks[{index}] ({bench.key}): {exc}") from None
        if is_spec_path(bench.name):
            spec_contents[bench.key] = benchmark.spec.model_dump(mode="json")
        resolved[bench.key] = benchmark
    return _CheckedBenchmarks(resolved=resolved, spec_contents=spec_contents)


def _check_judges(exp: Experiment, benchmarks: _CheckedBenchmarks) -> _CheckedJudges:
    """Build every judge once; a judge chosen for a benchmark must declare the benchmark's languages."""
    built: dict[str, Any] = {}
    for judge in exp.judges:
        try:
            get_judge_class(judge)
            # id and content hash (keyword list, weights, prompt): a changed judge makes new cells
            built[judge] = cached_judge(judge, exp.judge_options.get(judge))
        except ConfigError as exc:
            raise ConfigError(f"judges: {exc}") from None
    for index, bench in enumerate(exp.benchmarks):
        if bench.judge is None:
            continue
        wanted = set(bench.languages or benchmarks.resolved[bench.key].languages)
        reads = set(built[bench.judge].languages)
        if not wanted <= reads:  # no number for a language the judge does not declare
            raise ConfigError(
                f"benchmarks[{index}] ({bench.key}): judge {bench.judge!r} reads {'+'.join(sorted(reads))} but the "
                f"benchmark has {'+'.join(sorted(wanted - reads))}; choose a judge that declares them "
                "or restrict `languages`"
            )
    identities = [{"id": judge.id, "hash": judge.hash} for judge in built.values()]
    return _CheckedJudges(built=built, identities=identities)


def _resolve_models(
    exp: Experiment, hashes: HashCache
) -> tuple[dict[str, ResolvedModel], list[tuple[FinetunedModel, ResolvedModel]]]:
    """The experiment's models by role, and each fine-tune with its resolved model."""
    models: dict[str, ResolvedModel] = {}
    for role in ("original", "base", "aligned", "unaligned"):
        ref = getattr(exp.models, role)
        if ref is not None:
            models[role] = resolve_model(exp, role, ref, hashes)
    finetuned = [(ft, resolve_model(exp, f"finetuned[{i}]", ft, hashes)) for i, ft in enumerate(exp.models.finetuned)]
    return models, finetuned


def _plan_jobs(
    exp: Experiment, models: dict[str, ResolvedModel], finetuned: list[tuple[FinetunedModel, ResolvedModel]]
) -> list[CheckpointJob]:
    """One checkpoint job per method variant × fine-tune (reference rows: per evaluated model), plus the original model's."""
    jobs: list[CheckpointJob] = []
    if "original" in models:
        jobs.append(
            CheckpointJob(
                key=hash_value({"passthrough": models["original"].hash}, 32),
                info=ORIGINAL_INFO,
                label=ORIGINAL,
                params={},
                finetuned="-",
                task=None,
                inputs={"original": models["original"]},
                finetuned_models=(),
                use_adapter=False,
            )
        )
    for m_index, entry in enumerate(exp.methods):
        for label, params in entry.variants():
            where = f"methods[{m_index}] ({label})"
            method, full_params = _method(entry.name, params, where)
            for ft, resolved in finetuned:
                jobs.append(_job(exp, method, label, full_params, models, ft, resolved, where))
    return jobs


def _job(
    exp: Experiment,
    method: Method,
    label: str,
    full_params: dict[str, Any],
    models: dict[str, ResolvedModel],
    ft: FinetunedModel,
    resolved: ResolvedModel,
    where: str,
) -> CheckpointJob:
    """One method variant on one fine-tune, keyed by everything that makes its weights."""
    canonical = method.info.name
    reference_role = method.info.reference_role
    extra: dict[str, Any]
    if reference_role is ReferenceRole.FINETUNED:
        inputs, use_adapter, extra = {}, resolved.adapter is not None, {}
        key = hash_value({"passthrough": resolved.hash}, 32)
    elif reference_role is not None:  # a model of the experiment, the same for every fine-tune
        model_role = reference_role.value
        if model_role not in models:
            raise ConfigError(f"{where}: the {canonical!r} baseline needs models.{model_role}")
        inputs, use_adapter, extra = {model_role: models[model_role]}, False, {}
        key = hash_value({"passthrough": models[model_role].hash}, 32)
    else:
        inputs, use_adapter, extra = method_inputs(method, full_params, models, resolved, where)
        job_identity: dict[str, Any] = {
            "method": canonical,
            "params": full_params,
            "seed": exp.seed,
            "adapter": use_adapter,
            "inputs": {r: m.hash for r, m in inputs.items()},
            "finetuned": [resolved.hash],
        }
        if use_adapter:  # adapter updates are now taken relative to the model they are added to;
            # a checkpoint cached before that fix counted θ_A's adapter twice: never reuse it
            job_identity["adapter_updates"] = "relative@1"
        key = hash_value(job_identity, 32)
    return CheckpointJob(
        key=key,
        info=method.info,
        label=label,
        params={**full_params, **extra},
        finetuned=ft.name,
        task=ft.task,
        inputs=inputs,
        finetuned_models=(resolved,),
        use_adapter=use_adapter,
        implementation=method,
    )


def _plan_cells(
    exp: Experiment,
    jobs: list[CheckpointJob],
    all_jobs: list[CheckpointJob],
    benchmarks: _CheckedBenchmarks,
    judges: _CheckedJudges,
    only: dict[str, str],
) -> list[Cell]:
    """Each selected job × benchmark entry, named by the hash of its generation, judges and reference."""
    pairwise_benchmarks = _pairwise_benchmarks(exp)
    gen = exp.generation.model_dump(mode="json")

    def generation_key(job: CheckpointJob, bench: BenchmarkEntry) -> str:
        # the primary judge picks which verdicts score the cell, and `task` what it measures: not what is generated
        bench_spec = bench.model_dump(mode="json", exclude={"label", "judge", "task"})
        if bench.key in benchmarks.spec_contents:
            bench_spec["spec"] = benchmarks.spec_contents[bench.key]
        return hash_value({"checkpoint": job.key, "benchmark": bench_spec, "generation": gen, "seed": exp.seed}, 32)

    cells: list[Cell] = []
    for job in jobs:
        for bench in exp.benchmarks:
            if only.get("benchmark") and bench.key != only["benchmark"]:
                continue
            resolved = benchmarks.resolved[bench.key]
            reference = None
            if bench.key in pairwise_benchmarks and exp.pairwise is not None:
                ref_job = reference_job(all_jobs, exp.pairwise.reference, job)
                if ref_job is not None and ref_job.key != job.key:  # the reference is not judged against itself
                    reference = Cell(
                        cell_id="",
                        job=ref_job,
                        benchmark=bench,
                        generation_key=generation_key(ref_job, bench),
                        resolved_benchmark=resolved,
                        judges=judges.built,
                    )
            key = generation_key(job, bench)
            identity: dict[str, Any] = {
                "generation": key,
                "judges": judges.identities,
                "method": job.label,
                "finetuned": job.finetuned,
                "task": job.task,
            }
            # each only when set, so cells of experiments without it keep their ids
            if bench.judge is not None:
                identity["primary_judge"] = bench.judge
            if bench.task is not None:
                identity["benchmark_task"] = bench.task
            if reference is not None:
                identity["pairwise_reference"] = reference.generation_key
            cells.append(
                Cell(
                    cell_id=hash_value(identity, 32),
                    job=job,
                    benchmark=bench,
                    generation_key=key,
                    reference=reference,
                    resolved_benchmark=resolved,
                    judges=judges.built,
                )
            )
    return cells


def _pairwise_benchmarks(exp: Experiment) -> set[str]:
    """Labels of the benchmarks judged pairwise: those listed, else those whose scorer is pairwise."""
    if exp.pairwise is None:
        return set()
    keys = [b.key for b in exp.benchmarks]
    if exp.pairwise.benchmarks is not None:
        unknown = [k for k in exp.pairwise.benchmarks if k not in keys]
        if unknown:
            raise ConfigError(
                f"pairwise.benchmarks: {name_unknown(unknown, keys)} not among the experiment's benchmarks"
            )
        chosen = [b for b in exp.benchmarks if b.key in exp.pairwise.benchmarks]
    else:
        chosen = [b for b in exp.benchmarks if benchmark_for(exp, b).scorer == "pairwise"]
        if not chosen:
            raise ConfigError(
                "pairwise: no benchmark is scored pairwise (e.g. somf_eval); list the ones to judge "
                "pairwise in pairwise.benchmarks"
            )
    not_safety = [b.key for b in chosen if benchmark_for(exp, b).kind != "safety"]
    if not_safety:
        raise ConfigError(f"pairwise.benchmarks: {', '.join(not_safety)} are not safety benchmarks (nothing to judge)")
    return {b.key for b in chosen}


def reference_job(jobs: list[CheckpointJob], reference: str, job: CheckpointJob) -> CheckpointJob | None:
    """The job whose answers ``job``'s are judged against: ``reference`` (a label, or a method name with
    one variant) on the same fine-tuned model, or the original model (shared by all). None for the
    original model's own row when the reference belongs to the fine-tunes."""
    named = [j for j in jobs if reference in (j.label, j.method)]
    if not named:
        known = sorted({j.label for j in jobs} | {j.method for j in jobs})
        raise ConfigError(
            f"pairwise.reference: {name_unknown([reference], known)} is not a method of the experiment "
            f"(methods: {', '.join(known)})"
        )
    mine = [j for j in named if j.finetuned in (job.finetuned, "-")]
    labels = sorted({j.label for j in mine})
    if len(labels) > 1:
        raise ConfigError(
            f"pairwise.reference: {reference!r} names {len(labels)} variants ({', '.join(labels)}); give one label"
        )
    if not mine and job.finetuned == "-":
        return None
    if not mine:
        raise ConfigError(f"pairwise.reference: {reference!r} has no cell for fine-tuned model {job.finetuned!r}")
    return mine[0]


def _matches(job: CheckpointJob, only: dict[str, str]) -> bool:
    for key, value in only.items():
        if key == "method" and value not in (job.method, job.label):
            return False
        if key in ("finetuned", "model") and value != job.finetuned:
            return False
        if key not in ("method", "finetuned", "model", "benchmark"):
            raise ConfigError(f"--only {key}=...: unknown selector (use method=, finetuned=, benchmark=)")
    return True
