"""`realign zoo ...`: build, verify and measure the model-organism zoo."""

from __future__ import annotations

from pathlib import Path

import click

from harness.zoo import build, load_recipe, measure, summary_table, verify


@click.group()
def zoo() -> None:
    """Build, verify and measure the model organism (aligned, unaligned, fine-tuned adapters)."""


@zoo.command("build")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory (default: runs/zoo/<recipe name>).",
)
@click.option("--only", multiple=True, help="Build only these stages (repeatable); parents must be built.")
@click.option(
    "--steps-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiply every stage's steps (e.g. 0.01 for a CI smoke build).",
)
@click.option("--base", default=None, help="Override the recipe's base model (path or name).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option(
    "--measure/--no-measure",
    "measure_after",
    default=False,
    show_default=True,
    help="Run `zoo measure` on the built stages afterwards.",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def build_cmd(
    recipe: Path,
    out: Path | None,
    only: tuple[str, ...],
    steps_scale: float,
    base: str | None,
    threads: int | None,
    measure_after: bool,
    no_progress: bool,
) -> None:
    """Train the stages of RECIPE (YAML) into adapters/weights with manifests (resumable)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    parsed = load_recipe(recipe)
    out = out or Path("runs") / "zoo" / parsed.name
    built = build(
        parsed, out, only=only, steps_scale=steps_scale, base=base, progress=not no_progress, recipe_path=recipe
    )
    for name, path in built.items():
        click.echo(f"{name}: {path}")
    if measure_after:
        measure(out, base=base, stages=only or None, progress=not no_progress)
        click.echo(summary_table(out))
    click.echo(f"zoo: {len(built)} stage(s) in {out}")


@zoo.command("verify")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path("organism"))
def verify_cmd(directory: Path) -> None:
    """Recompute the sha256 of every file a zoo's manifests name (default: the shipped organism/)."""
    report = verify(directory)
    click.echo(
        f"ok: {directory}: {len(report.stages)} stage(s) {', '.join(report.stages)}; "
        f"{report.checked_files} files match their manifests; shipped {report.shipped_bytes / 1e6:.2f} MB"
    )


@zoo.command("measure")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path("organism"))
@click.option("--only", multiple=True, help="Measure only these stages (repeatable).")
@click.option("--no-original", is_flag=True, help="Skip the original (base) model.")
@click.option("--base", default=None, help="Override the recipe's base model (path or name).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
def measure_cmd(
    directory: Path, only: tuple[str, ...], no_original: bool, base: str | None, threads: int | None
) -> None:
    """Harmfulness (CatQA en/zh), over-refusal and held-out task NLL of a zoo; stored in its manifests."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    measure(directory, base=base, stages=only or None, include_original=not no_original)
    click.echo(summary_table(directory))
