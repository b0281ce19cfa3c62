"""`realign leaderboard`, `realign compare` and `realign status`: read the results store."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from harness.cli._options import parse_pairs
from harness.core.errors import ConfigError
from leaderboards import FORMATS, Store, build_leaderboard, compare_runs, render_leaderboard


@click.command("leaderboard")
@click.option(
    "--store", "store_path", required=True, metavar="FILE|URL", help="Results store (SQLite file or SQLAlchemy URL)."
)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (e.g. site/).")
@click.option("--run", "run_id", default=None, help="Run id or unique prefix (default: the latest run).")
@click.option(
    "--format",
    "formats",
    default="all",
    show_default=True,
    metavar="md|csv|json|html|all",
    help="Comma-separated formats to write.",
)
@click.option(
    "--judge",
    default=None,
    help="Primary judge id for every harmfulness column (default: the judge each benchmark's cells "
    "were scored with, i.e. the experiment's per-benchmark `judge` or its first judge).",
)
@click.option(
    "--judge-for",
    "judge_for",
    multiple=True,
    metavar="BENCHMARK=JUDGE",
    help="Primary judge of one benchmark's column (repeatable); JUDGE is a judge id or a unique prefix.",
)
def leaderboard_command(
    store_path: str, out_dir: str, run_id: str | None, formats: str, judge: str | None, judge_for: tuple[str, ...]
) -> None:
    """Aggregate a run into a leaderboard: Markdown, CSV, JSON and a static HTML site with plots.

    The HTML site (index.html + SVG plots) needs no server and no network. The same store always
    renders to byte-identical files.
    """
    wanted = list(FORMATS) if formats.strip() == "all" else [f.strip() for f in formats.split(",") if f.strip()]
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ConfigError(f"--format {','.join(unknown)}: expected some of {', '.join(FORMATS)} or all")
    column_judges = dict(parse_pairs(judge_for, "--judge-for", "BENCHMARK=JUDGE", "catqa=offline/charngram-logreg"))
    store = Store(store_path, create=False)
    board = build_leaderboard(store, run_id, judge=judge, judges=column_judges)
    written = render_leaderboard(board, out_dir, wanted)
    for path in written:
        click.echo(str(path))
    for note in board.notes:
        click.echo(f"note: {note}", err=True)


@click.command("compare")
@click.argument("baseline")
@click.argument("candidate")
@click.option(
    "--store",
    "store_path",
    default=None,
    metavar="FILE|URL",
    help="Store holding BASELINE/CANDIDATE when they are run ids (else each is FILE or FILE@RUN).",
)
@click.option("--alpha", default=0.05, show_default=True, type=float, help="Significance level after Holm correction.")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Track only this metric (repeatable): harmfulness, gsm8k_flexible, gsm8k_strict, pass@1, acc, nll, ...",
)
@click.option("--judge", default=None, help="Judge whose harmful/harmless verdicts define harmfulness.")
@click.option(
    "--by",
    default="benchmark",
    show_default=True,
    metavar="benchmark[,method][,finetuned]",
    help="How items are grouped into tests.",
)
@click.option(
    "--test",
    "test",
    type=click.Choice(["auto", "exact", "chi2"]),
    default="auto",
    show_default=True,
    help="McNemar variant for 0/1 metrics (auto: exact below 25 discordant pairs).",
)
@click.option(
    "--continuous",
    type=click.Choice(["wilcoxon", "bootstrap"]),
    default="wilcoxon",
    show_default=True,
    help="Paired test for continuous per-item metrics (e.g. nll, pass@k from several samples).",
)
@click.option("--resamples", default=2000, show_default=True, type=int, help="Paired bootstrap resamples.")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option("--show-flips", default=20, show_default=True, type=int, help="How many flipped items to print.")
@click.option(
    "--json", "json_out", default=None, type=click.Path(dir_okay=False), help="Also write the full report as JSON."
)
def compare_command(
    baseline: str,
    candidate: str,
    store_path: str | None,
    alpha: float,
    metrics: tuple[str, ...],
    judge: str | None,
    by: str,
    test: str,
    continuous: str,
    resamples: int,
    seed: int,
    show_flips: int,
    json_out: str | None,
) -> None:
    """Compare CANDIDATE with BASELINE item by item; exit 1 if the candidate is significantly worse.

    BASELINE and CANDIDATE are each a store file (its latest run), FILE@RUN, or a run id with --store.
    Items pair by method, method parameters, fine-tuned model, benchmark, item and sample. Metrics:
    harmfulness (judge verdicts) and every per-item utility score (GSM8K, pass@k, acc, nll); each
    one's direction comes from its scorer. Tests: McNemar for 0/1 outcomes, Wilcoxon signed-rank
    (or a paired bootstrap) for continuous ones. A metric getting worse with a Holm-corrected p below
    --alpha is a regression (exit 1); otherwise exit 0. Usable as a CI gate.
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    report = compare_runs(
        baseline,
        candidate,
        store=store_path,
        alpha=alpha,
        metrics=list(metrics) or None,
        judge=judge,
        by=[b.strip() for b in by.split(",") if b.strip()],
        resamples=resamples,
        seed=seed,
        test=test,
        continuous=continuous,
    )
    console = Console(width=160)
    console.print(f"baseline:  {report.baseline}\ncandidate: {report.candidate}\njudge: {report.judge or '—'}")
    table = Table(title=f"paired comparison (alpha {alpha}, Holm-corrected)")
    for column in (
        "group",
        "metric",
        "n",
        "baseline",
        "candidate",
        "diff [95% CI]",
        "worse/better flips",
        "p",
        "p (Holm)",
        "verdict",
    ):
        table.add_column(column)
    for r in report.results:
        style = {"worse": "bold red", "better": "green"}.get(r.verdict, "")
        table.add_row(
            escape(", ".join(r.group.values())),
            escape(r.metric),
            str(r.n),
            f"{r.baseline_mean:.3f}{_rg(r.baseline_corrected)}",
            f"{r.candidate_mean:.3f}{_rg(r.candidate_corrected)}",
            f"{r.diff:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]",
            f"{r.worse_flips}/{r.better_flips}",
            f"{r.p_value:.3g} ({r.test})",
            f"{r.p_holm:.3g}",
            r.verdict,
            style=style,
        )
    console.print(table)
    if any(r.baseline_corrected for r in report.results):
        console.print(
            "RG = Rogan–Gladen harmfulness corrected for judge error with the judge card's sens/spec "
            "[95% bootstrap CI over items and validation rows]",
            highlight=False,
        )
    flips = report.flipped
    if len(flips):
        console.print(
            f"{len(flips)} flipped items ({int((flips['direction'] == 'worse').sum())} worse); "
            f"first {min(show_flips, len(flips))}:"
        )
        for row in flips.head(show_flips).itertuples(index=False):
            console.print(
                f"  [{'red' if row.direction == 'worse' else 'green'}]{row.direction}[/] {row.metric} "
                f"{escape(f'{row.benchmark}/{row.item_id}#{row.sample_index} ({row.method_label}, {row.finetuned})')}: "
                f"{row.baseline:g} → {row.candidate:g}",
                highlight=False,
            )
            console.print(f"      baseline:  {row.baseline_completion!r}", highlight=False, markup=False)
            console.print(f"      candidate: {row.candidate_completion!r}", highlight=False, markup=False)
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    if json_out:
        Path(json_out).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str) + "\n")
    if report.regressed:
        names = "; ".join(f"{', '.join(r.group.values())} {r.metric}" for r in report.regressions)
        console.print(f"[bold red]REGRESSION[/]: candidate is significantly worse on {escape(names)}")
        # sys.exit, not click's Exit: the console script runs click with standalone_mode=False,
        # which would swallow Exit's code.
        sys.exit(1)
    console.print("no significant regression")


@click.command("status")
@click.option("--store", "store_path", required=True, metavar="FILE|URL", help="Results store.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_command(store_path: str, as_json: bool) -> None:
    """Runs, cells by status (done/cached/failed/pending), row counts and the last run's provenance."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    status = Store(store_path, create=False).status()
    if as_json:
        click.echo(json.dumps(status, indent=2, sort_keys=True, default=str))
        return
    console = Console(width=160)
    console.print(f"store {status['store']} (schema v{status['schema_version']})", highlight=False, markup=False)
    table = Table(title=f"{len(status['runs'])} runs")
    for column in ("run", "name", "status", "started", "finished", "done", "cached", "failed", "pending"):
        table.add_column(column)
    for run in status["runs"]:
        cells = run["cells"]
        table.add_row(
            run["run_id"],
            escape(str(run["name"])),
            run["status"],
            run["started_at"],
            run.get("finished_at") or "—",
            *(str(cells.get(k, 0)) for k in ("done", "cached", "failed", "pending")),
        )
    console.print(table)
    counts = status["counts"]
    console.print("rows: " + ", ".join(f"{k} {v}" for k, v in counts.items()), highlight=False)
    latest = status["latest"]
    if latest:
        prov = latest.get("provenance") or {}
        packages = ", ".join(f"{k} {v}" for k, v in sorted((prov.get("packages") or {}).items()) if v)
        console.print(
            f"last run {latest['run_id']}: git {prov.get('git_sha') or '—'}"
            f"{' (dirty)' if prov.get('git_dirty') else ''}; device {prov.get('device') or '—'}; "
            f"python {prov.get('python') or '—'}; seeds {prov.get('seeds') or {}}",
            highlight=False,
        )
        console.print(f"packages: {packages or '—'}", highlight=False)
        if latest.get("counts"):
            console.print(f"counts: {latest['counts']}", highlight=False)


def _rg(value: tuple[float | None, float | None, float | None] | None) -> str:
    if not value or value[0] is None:
        return ""
    point, low, high = value
    ci = f" [{low:.3f}, {high:.3f}]" if low is not None and high is not None else ""
    return f" (RG {point:.3f}{ci})"
