"""`realign benchmarks list|show` and `realign score`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from benchmarks import get_benchmark, list_benchmarks
from benchmarks.scoring import run_lm_eval_task, score, score_with_model, scorer_names
from harness.cli._options import data_option, field_option, load_benchmark
from harness.core.checkpoints import resolve_model
from harness.core.errors import ConfigError, DataError, RealignError
from harness.core.records import GenerationRecord, Verdict, append_jsonl, read_jsonl
from harness.generate import check_model_weights

SPEC_EXAMPLE = """\
your own benchmark as a spec file (then --benchmark mine.yaml, no --data; `realign run`: name: mine.yaml):
  name: mine
  kind: safety                       # or utility
  sources: [{path: mine.csv}]        # relative to the spec file (or under $REALIGN_DATA_DIR)
  fields: {prompt: Behavior, context: ContextString, metadata: [BehaviorID]}
  prompt_template: ["{context}", "{prompt}"]   # joined by template_separator (default a blank line);
                                               # a part whose fields are empty is left out
  default_scorer: harmfulness        # per-category scores come from the category column"""


@click.group("benchmarks")
def benchmarks_group() -> None:
    """List and inspect the registered benchmarks."""


@benchmarks_group.command("list")
def list_cmd() -> None:
    """Name, kind, languages and item count (when the data is present)."""

    click.echo(f"{'name':<18} {'kind':<8} {'scorer':<16} {'items':>6}  languages")
    for name in list_benchmarks():
        bench = get_benchmark(name)
        try:
            count = str(len(bench.load())) if bench.spec.sources else "(file)"
        except RealignError:
            count = "absent"
        click.echo(f"{name:<18} {bench.kind:<8} {bench.scorer:<16} {count:>6}  {','.join(bench.languages)}")


def _describe_fields(bench: Any) -> list[str]:
    """The column mapping in words: which column feeds each item field."""
    fields, conventional = bench.spec.fields, bench.spec.conventional_columns
    lines = [
        "column mapping (item field <- column; change with --field FIELD=COLUMN, `fields:` in a spec "
        "YAML, or `options:` of a benchmark in an experiment):"
    ]
    for name in ("prompt", "category", "id", "language", "reference", "subcategory", "context"):
        column = getattr(fields, name)
        if column is not None:
            source = f"column {column!r}" + (
                " (required)" if name != "prompt" or not bench.spec.prompt_template else ""
            )
        elif conventional:
            source = f"column {name!r} when the file has one"
        else:
            source = "-"
        note = {
            "category": "  (scores per category)",
            "context": "  (item.metadata['context'], for judges that take context)",
            "id": "  (default: the row number)",
        }.get(name, "")
        lines.append(f"  {name:<12} <- {source}{note}")
    kept = ", ".join(map(repr, fields.metadata)) or "none"
    lines.append(f"  {'metadata':<12} <- columns {kept}  (--field metadata=COL, repeatable)")
    if bench.spec.prompt_template is not None:
        lines.append(
            f"prompt template: {bench.spec.prompt_template!r} "
            f"(list parts joined by {bench.spec.template_separator!r}, empty ones left out)"
        )
    return lines


@benchmarks_group.command("show")
@click.argument("name")
@click.option("--samples", default=3, show_default=True, help="How many sample items to print.")
@data_option("Explicit data file or folder (your CSV/JSONL for csv|jsonl).")
@field_option
def show_cmd(name: str, samples: int, data_path: str | None, fields: tuple[str, ...]) -> None:
    """Spec, column mapping, resolved files, categories and a few sample items. NAME: a benchmark or a
    YAML spec path.

    \b
    realign benchmarks show csv --data mine.csv --field prompt=Behavior
    realign benchmarks show mine.yaml
    """
    bench = load_benchmark(name, fields)
    click.echo(json.dumps(bench.spec.model_dump(exclude_defaults=True), indent=2, ensure_ascii=False))
    for line in _describe_fields(bench):
        click.echo(line)
    if not bench.spec.sources:
        click.echo(SPEC_EXAMPLE)
    try:
        files = bench.resolve(data_path)
        items = bench.load(data_path=data_path)
    except RealignError as exc:
        click.echo(f"data: {exc}")
        return
    click.echo("resolved files:")
    for _, lang, path in files[:20]:
        click.echo(f"  [{lang or '-'}] {path}")
    if len(files) > 20:
        click.echo(f"  ... {len(files) - 20} more")
    categories = sorted({i.category for i in items if i.category})
    click.echo(f"items: {len(items)}; categories ({len(categories)}): {', '.join(categories)}")
    for item in items[:samples]:
        click.echo(json.dumps(item.model_dump(exclude_defaults=True), ensure_ascii=False)[:400])


@click.command("score")
@click.option("--benchmark", "benchmark", help="Benchmark name (or a YAML spec path).")
@click.option("--generations", type=click.Path(exists=True, dir_okay=False), help="GenerationRecord JSONL.")
@click.option("--verdicts", type=click.Path(exists=True, dir_okay=False), help="Verdict JSONL (safety).")
@data_option("Data file or folder for the items (your CSV/JSONL for csv|jsonl).")
@field_option
@click.option(
    "--allow-code-execution",
    is_flag=True,
    help="Required for HumanEval: EXECUTES MODEL-WRITTEN CODE (in the sandbox: separate process, "
    "no network, CPU/memory/file/process limits, throwaway dir).",
)
@click.option(
    "--sandbox",
    type=click.Choice(["namespace", "audit"]),
    default="namespace",
    show_default=True,
    help="namespace: unshare net/pid/mount namespaces, read-only host; refuses when unavailable. "
    "audit: NO namespaces (uid nobody + audit hook); only when asked for, with a warning.",
)
@click.option("-k", "ks", multiple=True, type=int, default=(1,), show_default=True, help="pass@k values.")
@click.option("--out", type=click.Path(dir_okay=False), help="Append Score rows to this JSONL file.")
@click.option(
    "--model",
    "model",
    default=None,
    help="Model directory (or smollm2-135m-instruct) for the scorers that read the model, not "
    "generations: xcopa_zh (log-likelihood accuracy), task_nll (answer NLL), --lm-eval-task.",
)
@click.option(
    "--adapter",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="PEFT LoRA adapter on --model (merged in memory).",
)
@click.option(
    "--lm-eval-task",
    "lm_eval_task",
    type=click.Path(exists=True),
    default=None,
    help="An lm-eval task YAML (or a folder of them) run offline on --model; no --benchmark needed.",
)
@click.option("--lang", "languages", multiple=True, help="With --model: language filter, repeatable.")
@click.option(
    "--category",
    "categories",
    multiple=True,
    help="With --model: category filter (task_nll: math, code, chinese, english), repeatable.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="With --model: first N items only.")
@click.option("--allow-pickle", is_flag=True, help="Load pickle weights (weights_only=True); refused by default.")
def score_cmd(
    benchmark: str | None,
    generations: str | None,
    verdicts: str | None,
    data_path: str | None,
    fields: tuple[str, ...],
    allow_code_execution: bool,
    sandbox: str,
    ks: tuple[int, ...],
    out: str | None,
    model: str | None,
    adapter: str | None,
    lm_eval_task: str | None,
    languages: tuple[str, ...],
    categories: tuple[str, ...],
    limit: int | None,
    allow_pickle: bool,
) -> None:
    """Score saved generations / verdicts: overall and per language and category.

    With --model, score the model itself instead: a benchmark whose scorer reads the model (xcopa_zh,
    task_nll), or an lm-eval task YAML with --lm-eval-task.
    """

    if model is not None or lm_eval_task is not None:
        scores = _score_model(
            benchmark,
            model,
            adapter,
            lm_eval_task,
            data_path=data_path,
            languages=languages,
            categories=categories,
            limit=limit,
            allow_pickle=allow_pickle,
            given=bool(generations or verdicts),
        )
    else:
        if benchmark is None:
            raise ConfigError("realign score: give --benchmark (or --lm-eval-task with --model)")
        if not generations and not verdicts:
            raise ConfigError(
                "realign score: give --generations (and --verdicts for a safety benchmark), "
                "or --model for a benchmark scored from the model (xcopa_zh, task_nll)"
            )
        bench = load_benchmark(benchmark, fields)
        items = {i.id: i for i in bench.load(data_path=data_path)}
        gens = (
            _checked(generations, read_jsonl(generations, GenerationRecord), bench.name, items) if generations else []
        )
        verds = _checked(verdicts, read_jsonl(verdicts, Verdict), bench.name, items) if verdicts else []
        scores = score(
            bench,
            gens,
            verds,
            items,
            allow_code_execution=allow_code_execution,
            ks=ks,
            sandbox_options={"isolation": sandbox},
        )
    for row in scores:
        ci = f" [{row.ci_low:.3f}, {row.ci_high:.3f}]" if row.ci_low is not None else ""
        subset = ",".join(f"{k}={v}" for k, v in row.subset.items()) or "all"
        click.echo(f"{row.benchmark:<14} {row.metric:<24} {subset:<40} {row.value:.4f}{ci} n={row.n}")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(out, scores)


def _score_model(
    benchmark: str | None,
    model: str | None,
    adapter: str | None,
    lm_eval_task: str | None,
    *,
    data_path: str | None,
    languages: tuple[str, ...],
    categories: tuple[str, ...],
    limit: int | None,
    allow_pickle: bool,
    given: bool,
) -> list[Any]:
    """Scores read from the model itself: a model-scored benchmark, or an lm-eval task."""

    if model is None:
        raise ConfigError("realign score: --lm-eval-task runs on a model: give --model DIR")
    if given:
        raise ConfigError("realign score: --model scores the model itself; it takes no --generations/--verdicts")
    if (benchmark is None) == (lm_eval_task is None):
        raise ConfigError("realign score --model: give exactly one of --benchmark and --lm-eval-task")
    loaded = _scoring_model(model, adapter, allow_pickle)
    if lm_eval_task is not None:
        scores = run_lm_eval_task(loaded, lm_eval_task, limit=limit)
        if not scores:
            raise ConfigError(f"{lm_eval_task}: lm-eval returned no metrics (no `task:` in the YAML?)")
        return scores
    assert benchmark is not None
    bench = get_benchmark(benchmark)
    if bench.reads != "model":
        raise ConfigError(
            f"benchmark {bench.name!r} is scored from saved generations (scorer {bench.scorer!r}), "
            f"not from the model: run `realign generate` and pass --generations; "
            f"--model scores {', '.join(sorted(scorer_names('model')))} benchmarks"
        )
    items = bench.load(
        limit=limit, languages=list(languages) or None, categories=list(categories) or None, data_path=data_path
    )
    if not items:
        raise ConfigError(f"benchmark {bench.name!r}: no items after the filters; nothing to score")
    return score_with_model(bench, loaded, items)


def _scoring_model(model: str, adapter: str | None, allow_pickle: bool) -> Any:
    """An HF (model, tokenizer) for the log-likelihood scorers; an adapter is merged in memory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(resolve_model(model))
    check_model_weights(path, adapter, allow_pickle=allow_pickle)  # the same refusals as generation
    hf = AutoModelForCausalLM.from_pretrained(path)
    if adapter is not None:
        from peft import PeftModel

        hf = PeftModel.from_pretrained(hf, adapter).merge_and_unload()
    return hf.eval(), AutoTokenizer.from_pretrained(path)


def _checked(path: str, records: list[Any], benchmark: str, items: dict[str, Any]) -> list[Any]:
    """Records fit to score: some, all for ``benchmark``'s items, each (item, sample[, judge]) once."""
    if not records:
        raise DataError(f"{path}: no records; nothing to score")
    seen: dict[tuple[Any, ...], int] = {}
    for index, record in enumerate(records, start=1):
        other = getattr(record, "benchmark", benchmark)
        if other != benchmark:
            raise DataError(
                f"{path}: record {index} (item {record.item_id!r}) is for benchmark {other!r}, not {benchmark!r}"
            )
        if record.item_id not in items:
            raise DataError(
                f"{path}: record {index}: item {record.item_id!r} is not one of {benchmark!r}'s "
                f"{len(items)} items (another benchmark's file, or other --data?)"
            )
        key = (record.item_id, record.sample_index, getattr(record, "judge_id", None))
        if key in seen:
            raise DataError(
                f"{path}: record {index} repeats item {record.item_id!r} sample {record.sample_index} "
                f"(first as record {seen[key]}); a file holds each once"
            )
        seen[key] = index
    return records
