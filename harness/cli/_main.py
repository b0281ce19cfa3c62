from __future__ import annotations

import logging
import sys

import click

from harness.cli._lazy import LazyCommand, LazyGroup
from harness.core.errors import RealignError

# Every `realign` command: name -> where it lives and its one-line help (the docstring's first line).
COMMANDS: dict[str, LazyCommand] = {
    "benchmarks": LazyCommand(
        "harness.cli.cmd_benchmarks:benchmarks_group", "List and inspect the registered benchmarks."
    ),
    "compare": LazyCommand(
        "harness.cli.cmd_leaderboard:compare_command",
        "Compare CANDIDATE with BASELINE item by item; exit 1 if the candidate is significantly worse.",
    ),
    "generate": LazyCommand(
        "harness.cli.cmd_generate:generate_command",
        "Generate answers of MODEL to a benchmark's items (greedy by default) into --out.",
    ),
    "judge": LazyCommand(
        "harness.cli.cmd_judge:judge_group",
        "Judge saved generations: write one Verdict per generation (or per pair with --reference).",
    ),
    "leaderboard": LazyCommand(
        "harness.cli.cmd_leaderboard:leaderboard_command",
        "Aggregate a run into a leaderboard: Markdown, CSV, JSON and a static HTML site with plots.",
    ),
    "merge": LazyCommand("harness.cli.cmd_merge:merge_command", "Merge checkpoints with METHOD, e.g."),
    "methods": LazyCommand(
        "harness.cli.cmd_methods:methods_group",
        "List registered methods or show one method's parameters, inputs and reference.",
    ),
    "models": LazyCommand("harness.cli.cmd_models:models", "Model checkpoints: import, inspect, merge adapters."),
    "run": LazyCommand(
        "harness.cli.cmd_run:run_command",
        "Run EXPERIMENT (YAML): realign, generate, judge, score and store every cell of the matrix.",
    ),
    "score": LazyCommand(
        "harness.cli.cmd_benchmarks:score_cmd",
        "Score saved generations / verdicts: overall and per language and category.",
    ),
    "somf": LazyCommand(
        "harness.cli.cmd_somf:somf",
        "SOMF: learn a safety-subspace mask over task vectors with DPO, then fuse (arXiv 2405.09055).",
    ),
    "status": LazyCommand(
        "harness.cli.cmd_leaderboard:status_command",
        "Runs, cells by status (done/cached/failed/pending), row counts and the last run's provenance.",
    ),
    "zoo": LazyCommand(
        "harness.cli.cmd_zoo:zoo",
        "Build, verify and measure the model organism (aligned, unaligned, fine-tuned adapters).",
    ),
}


@click.group(
    cls=LazyGroup,
    lazy_commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Realign Bench: compare safety-realignment methods for fine-tuned LLMs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> None:
    """Entry point: RealignError becomes a one-line message and exit code 2, never a traceback."""
    try:
        # Non-standalone mode returns ctx.exit(N)'s code instead of exiting: pass it on.
        code = cli.main(args=argv, prog_name="realign", standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except RealignError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
