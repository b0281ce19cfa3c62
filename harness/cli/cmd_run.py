"""`realign run EXPERIMENT.yaml` — plan, cache, resume and execute a matrix."""

from __future__ import annotations

import click

from harness.core.errors import ConfigError
from harness.experiment import load_experiment, run_experiment


def _parse_only(values: tuple[str, ...]) -> dict[str, str]:
    only: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key or not val:
            raise ConfigError(f"--only {value!r}: expected KEY=VALUE, e.g. method=resta")
        only[key.strip()] = val.strip()
    return only


@click.command("run")
@click.argument("experiment", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Print the plan (cells, what is cached, what will run) and stop.")
@click.option(
    "--only",
    multiple=True,
    metavar="KEY=VALUE",
    help="Restrict to cells matching method=..., finetuned=... or benchmark=... (repeatable).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default=None,
    help="Override the experiment's executor (ray: one task per checkpoint group, GPUs requested).",
)
@click.option("--no-progress", is_flag=True, help="Do not draw progress bars.")
@click.option(
    "--allow-pickle",
    is_flag=True,
    help="Load pickle checkpoints (weights_only=True) on every path; refused by default (config: allow_pickle).",
)
@click.option(
    "--allow-nonfinite",
    is_flag=True,
    help="Merge inputs/outputs holding NaN/inf instead of refusing (config: allow_nonfinite).",
)
@click.option(
    "--sandbox",
    type=click.Choice(["namespace", "audit"]),
    default=None,
    help="Override the experiment's sandbox for model-written code. namespace (default) refuses to "
    "run when unshare is missing; audit is weaker and must be asked for explicitly.",
)
def run_command(
    experiment: str,
    dry_run: bool,
    only: tuple[str, ...],
    executor: str | None,
    no_progress: bool,
    allow_pickle: bool,
    allow_nonfinite: bool,
    sandbox: str | None,
) -> None:
    """Run EXPERIMENT (YAML): realign, generate, judge, score and store every cell of the matrix.

    Every artifact is cached by content: an unchanged re-run does nothing, an added method runs only
    its cells, and an interrupted run resumes item by item.
    """
    from rich.console import Console
    from rich.table import Table

    exp = load_experiment(experiment)
    overrides = {k: True for k, v in (("allow_pickle", allow_pickle), ("allow_nonfinite", allow_nonfinite)) if v}
    if overrides:
        exp = exp.model_copy(update=overrides)
    result = run_experiment(
        exp, only=_parse_only(only), dry_run=dry_run, executor=executor, progress=not no_progress, sandbox=sandbox
    )
    console = Console()
    if dry_run:
        table = Table(title=f"plan: {len(result.plan_rows)} cells")
        for column in ("cell", "method", "finetuned", "benchmark", "checkpoint", "generations", "stored"):
            table.add_column(column)
        for row in result.plan_rows:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
        todo = sum(1 for r in result.plan_rows if r["stored"] == "no")
        console.print(f"{todo} of {len(result.plan_rows)} cells would run; store: {result.store_location}")
        return
    console.print(f"run {result.run_id}: {result.stats.summary()}")
    console.print(f"store: {result.store_location}")
    if result.log_path:
        console.print(f"log: {result.log_path}")
