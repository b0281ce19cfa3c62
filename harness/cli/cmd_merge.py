"""`realign merge` — build a realigned/merged checkpoint with one registered method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from harness.core.errors import ConfigError
from harness.core.yaml_strict import load_yaml
from realign_methods import MergeSpec, merge, mergekit_fields, plan, resolve_device


def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _parse_params(values: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-p {value!r}: expected NAME=VALUE, e.g. -p gamma=0.5")
        params[key.strip()] = _parse_value(raw.strip())
    return params


def _load_config(path: str) -> dict[str, Any]:

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read YAML ({exc})") from exc
    data = load_yaml(text, f"--config {path}")
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of MergeSpec fields")
    return data


@click.command("merge")
@click.option("--method", "-m", help="Registered method name (see `realign methods list`).")
@click.option(
    "--aligned", type=click.Path(), help="Safety-aligned model directory (or a LoRA adapter folder, see above)."
)
@click.option("--unaligned", type=click.Path(), help="Unaligned model (aligned model fine-tuned on harmful data).")
@click.option(
    "--base",
    type=click.Path(),
    help="Pre-trained base model: anchor of task vectors for methods that take one, and the model "
    "adapter folders given as models are merged onto.",
)
@click.option("--finetuned", "-f", type=click.Path(), multiple=True, help="Fine-tuned model (repeatable).")
@click.option(
    "--adapter",
    "adapters",
    type=click.Path(),
    multiple=True,
    help="PEFT LoRA adapter whose factors the method reads (repeatable).",
)
@click.option(
    "--adapter-base",
    metavar="aligned|base|PATH",
    help="The model the --adapter adapters were trained on (default: their adapter_config.json's "
    "base_model_name_or_path). 'base' for adapters that continue θ_A's adapter on the base.",
)
@click.option("--preference-data", type=click.Path(), help="Preference data file (methods that train).")
@click.option("--calibration-data", type=click.Path(), help="Calibration data file.")
@click.option("--out", "-o", type=click.Path(), help="Output directory (written atomically).")
@click.option("--param", "-p", "params", multiple=True, metavar="NAME=VALUE", help="Method parameter (repeatable).")
@click.option("--seed", type=int, help="Global seed (per-tensor seeds derive from it and the tensor name).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), help="Output dtype (default: input's).")
@click.option("--max-shard-size", help="Shard size, e.g. 1GB (default 1GB).")
@click.option(
    "--output", "output_kind", type=click.Choice(["dense", "adapter"]), help="Dense weights or a LoRA adapter."
)
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), help="YAML with MergeSpec fields; options override it."
)
@click.option(
    "--mergekit-config",
    "mergekit_config",
    type=click.Path(dir_okay=False),
    help="A mergekit YAML (linear, task_arithmetic, ties, dare_ties, dare_linear) run with mergekit's "
    "semantics; --out is still required, other options override it.",
)
@click.option("--dry-run", is_flag=True, help="Validate and print what would be read and written.")
@click.option(
    "--allow-pickle", is_flag=True, default=None, help="Allow pickle checkpoints (loaded with weights_only=True)."
)
@click.option(
    "--allow-nonfinite",
    is_flag=True,
    default=None,
    help="Merge inputs holding NaN/inf (and write such outputs) instead of refusing them.",
)
@click.option("--overwrite", is_flag=True, default=None, help="Replace an existing output directory.")
@click.option("--threads", type=int, help="Compute threads (default: all cores).")
@click.option("--device", default="cpu", show_default=True, help="Compute device: cpu, cuda or cuda:N.")
def merge_command(
    config_path: str | None,
    mergekit_config: str | None,
    dry_run: bool,
    params: tuple[str, ...],
    threads: int | None,
    device: str,
    **options: Any,
) -> None:
    """Merge checkpoints with METHOD, e.g.

    realign merge --method resta --aligned A --unaligned U --finetuned F --out O -p gamma=0.5

    \b
    Any model (--aligned, --unaligned, --base, -f) may be a PEFT LoRA adapter folder: it is read as its
    base + scale·B·A (exactly what `realign models merge-adapter` writes), the base being --base or else
    the local model its adapter_config.json names, e.g. the organism:
    realign merge -m resta --aligned organism/aligned --unaligned organism/unaligned -f organism/math --out O
    With --adapter, each adapter's update is taken relative to the model the method adds it to: an
    adapter that continued θ_A's adapter on the base (--adapter-base base) gets θ_A's adapter subtracted.
    """
    from rich.console import Console

    if config_path and mergekit_config:
        raise ConfigError("--config and --mergekit-config are exclusive: give one")
    fields: dict[str, Any] = _load_config(config_path) if config_path else {}
    if mergekit_config:
        clashing = [
            f"--{k.replace('_', '-')}"
            for k in ("method", "aligned", "unaligned", "base", "finetuned", "adapters")
            if options.get(k)
        ] + (["--param"] if params else [])
        if clashing:
            raise ConfigError(f"--mergekit-config gives the method, models and parameters: drop {', '.join(clashing)}")
        fields, warnings = mergekit_fields(mergekit_config)
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
    rename = {"output_kind": "output"}
    for key, value in options.items():
        if value is None or value == ():
            continue
        fields[rename.get(key, key)] = list(value) if isinstance(value, tuple) else value
    if params:
        fields["params"] = {**(fields.get("params") or {}), **_parse_params(params)}
    for required in ("method", "out"):
        if required not in fields:
            raise ConfigError(f"--{required} is required (or give it in --config)")
    try:
        spec = MergeSpec(**fields)
    except Exception as exc:  # pydantic ValidationError: name the field
        errors = getattr(exc, "errors", None)
        if callable(errors):
            details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors())
            raise ConfigError(f"merge spec: {details}") from None
        raise
    resolve_device(device)  # a cuda request without a GPU is refused before anything else is done
    console = Console()
    if dry_run:
        for line in plan(spec).lines():
            console.print(line, highlight=False)
        console.print("dry run: nothing written", highlight=False)
        return
    out = merge(spec, threads=threads, device=device)
    console.print(f"wrote {out} (method {spec.method}; provenance in {out / 'realign_merge.json'})", highlight=False)
