"""`realign somf train|apply|show`: SOMF mask training and realigned-checkpoint writing.

Training options are derived from ``SomfTrainConfig``'s fields (one option per field, same name),
so the CLI and the Python API cannot drift apart.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import click

from harness.core.errors import ConfigError
from realign_methods.somf import (
    FUSIONS,
    SomfTrainConfig,
    apply_trained_mask,
    load_task_vectors,
    make_config,
    read_mask,
    train_mask,
)
from realign_methods.somf._vectors import vectors_from_provenance


def _config_options(command: Any) -> Any:
    """Add one click option per SomfTrainConfig field (default None: unset fields keep the config default)."""
    for name, info in reversed(list(SomfTrainConfig.model_fields.items())):
        if name == "fusion_params":
            continue
        flag = "--" + name.replace("_", "-")
        annotation = info.annotation
        args = typing.get_args(annotation)
        help_text = f"{info.description or name} [default: {info.default}]"
        if annotation is bool:
            command = click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=None, help=help_text)(command)
            continue
        if typing.get_origin(annotation) is typing.Literal:
            kind: Any = click.Choice([str(a) for a in args])
        elif name == "fusion":
            kind = click.Choice(list(FUSIONS))
        elif annotation is int or int in args:
            kind = int
        elif annotation is float:
            kind = float
        else:
            kind = str
        command = click.option(flag, name, type=kind, default=None, help=help_text)(command)
    return command


def _vectors(
    setting: str | None,
    aligned: str | None,
    base: str | None,
    aligned_adapter: str | None,
    finetuned: tuple[str, ...],
    adapters: tuple[str, ...],
) -> Any:
    if setting is None:
        if adapters and aligned_adapter is not None:
            setting = "lora"
        elif adapters:
            setting = "merged"
        elif finetuned:
            setting = "full"
        else:
            raise ConfigError("give fine-tuned models (--finetuned) or LoRA adapters (--adapter)")
    return load_task_vectors(
        setting, aligned=aligned, base=base, aligned_adapter=aligned_adapter, finetuned=finetuned, adapters=adapters
    )


_input_options = [
    click.option(
        "--setting",
        type=click.Choice(["lora", "merged", "full"]),
        default=None,
        help="task-vector space (default: lora with --aligned-adapter, merged with --adapter, else full)",
    ),
    click.option("--aligned", type=click.Path(exists=True, file_okay=False), help="aligned model directory"),
    click.option(
        "--base", type=click.Path(exists=True, file_okay=False), help="setting lora: base model of the adapters"
    ),
    click.option(
        "--aligned-adapter", type=click.Path(exists=True, file_okay=False), help="setting lora: aligned LoRA adapter"
    ),
    click.option(
        "--finetuned",
        multiple=True,
        type=click.Path(exists=True, file_okay=False),
        help="fine-tuned full checkpoint (repeat for multi-task)",
    ),
    click.option(
        "--adapter",
        "adapters",
        multiple=True,
        type=click.Path(exists=True, file_okay=False),
        help="fine-tuned LoRA adapter (repeat for multi-task: one shared mask)",
    ),
]


def _with_inputs(command: Any) -> Any:
    for option in reversed(_input_options):
        command = option(command)
    return command


@click.group("somf")
def somf() -> None:
    """SOMF: learn a safety-subspace mask over task vectors with DPO, then fuse (arXiv 2405.09055)."""


@somf.command("train")
@_with_inputs
@click.option(
    "--preferences",
    type=click.Path(exists=True, dir_okay=False),
    help="chosen/rejected JSONL or JSON (default: SOMF's PKU-SafeRLHF pairs in the data dir)",
)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="mask directory to write")
@click.option("--lam", type=float, default=None, help="fusion λ override")
@click.option("--density", type=float, default=None, help="TIES kept fraction override")
@click.option("--p", "drop_p", type=float, default=None, help="DARE drop-rate override")
@_config_options
def train(
    setting: str | None,
    aligned: str | None,
    base: str | None,
    aligned_adapter: str | None,
    finetuned: tuple[str, ...],
    adapters: tuple[str, ...],
    preferences: str | None,
    out: str,
    lam: float | None,
    density: float | None,
    drop_p: float | None,
    **fields: Any,
) -> None:
    """Train the mask logits (resumes from OUT.partial; a finished OUT is reused)."""
    overrides = {k: v for k, v in {"lam": lam, "density": density, "p": drop_p}.items() if v is not None}
    config = make_config(**{k: v for k, v in fields.items() if v is not None}, fusion_params=overrides)
    vectors = _vectors(setting, aligned, base, aligned_adapter, finetuned, adapters)
    click.echo(
        f"somf: setting={vectors.setting}, {len(vectors.deltas)} task vector(s), {vectors.parameter_count:,} "
        f"task-vector parameters, fusion={config.fusion}, steps={config.steps}"
    )

    def progress(step: int, metrics: dict[str, float]) -> None:
        click.echo(
            f"step {step}/{config.steps}  loss {metrics['loss']:.4f}  reward-acc {metrics['reward_accuracy']:.2f}  "
            f"density {metrics['mask_density']:.3f}"
        )

    mask_dir = train_mask(vectors, config, out, preference_file=preferences, progress=progress)
    _show(mask_dir)


@somf.command("apply")
@click.argument("mask_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="realigned checkpoint to write")
@click.option(
    "--mode",
    type=click.Choice(["soft", "sample", "threshold"]),
    default="sample",
    show_default=True,
    help="mask at inference: σ(logit), seeded binary sample (paper), or σ(logit) > threshold",
)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the binary sample / DARE drops")
@click.option("--threshold", type=float, default=0.5, show_default=True)
@click.option("--overwrite", is_flag=True, help="replace an existing --out")
@click.option(
    "--adapter-out",
    type=click.Path(file_okay=False),
    default=None,
    help="setting lora: also write the realigned LoRA adapter here",
)
@_with_inputs
def apply(
    mask_dir: str,
    out: str,
    mode: str,
    seed: int,
    threshold: float,
    overwrite: bool,
    adapter_out: str | None,
    setting: str | None,
    aligned: str | None,
    base: str | None,
    aligned_adapter: str | None,
    finetuned: tuple[str, ...],
    adapters: tuple[str, ...],
) -> None:
    """Write the realigned checkpoint from MASK_DIR (inputs default to the ones it was trained on)."""
    if finetuned or adapters:
        vectors = _vectors(setting, aligned, base, aligned_adapter, finetuned, adapters)
    else:
        _, summary = read_mask(mask_dir)
        vectors = vectors_from_provenance(summary.get("inputs", {}))
    path = apply_trained_mask(
        mask_dir, vectors, out, mode=mode, seed=seed, threshold=threshold, overwrite=overwrite, adapter_out=adapter_out
    )
    click.echo(f"wrote {path} (mask mode {mode}, seed {seed})" + (f" and adapter {adapter_out}" if adapter_out else ""))


@somf.command("show")
@click.argument("mask_dir", type=click.Path(exists=True, file_okay=False))
def show(mask_dir: str) -> None:
    """Summary of a trained mask: data, config, loss, validation accuracy."""
    _show(Path(mask_dir))


def _show(mask_dir: Path | str) -> None:
    _, summary = read_mask(mask_dir)
    data, mask = summary.get("data", {}), summary.get("mask", {})
    lines = [
        f"mask: {mask_dir}",
        f"setting: {summary.get('setting')}  fusion: {summary.get('config', {}).get('fusion')} "
        f"{json.dumps(summary.get('resolved_fusion_params'))}",
        f"data: {data.get('path')} (sha256 {str(data.get('sha256'))[:12]}…), {data.get('train_pairs')} train pairs / "
        f"{data.get('validation_pairs')} validation pairs ({data.get('train_prompts')}/{data.get('validation_prompts')} prompts)",
        f"logits: {mask.get('logits'):,} over {mask.get('task_vector_parameters'):,} task-vector parameters; "
        f"expected density {mask.get('density', 0):.3f}",
        f"DPO loss on training pairs (soft mask): {summary.get('train_loss_initial'):.4f} -> {summary.get('train_loss_final'):.4f}",
        f"validation preference accuracy: {summary.get('validation_preference_accuracy')}  "
        f"(reward accuracy {summary.get('validation_reward_accuracy')})",
        f"training time: {summary.get('train_seconds', 0):.1f} s",
    ]
    click.echo("\n".join(lines))
