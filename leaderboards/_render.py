"""Render a Leaderboard as Markdown, CSV, JSON and a static, offline HTML site with SVG plots.

Everything is deterministic: tables are sorted, floats are formatted with fixed precision, and the
SVGs are written with a fixed ``svg.hashsalt`` and no date metadata, so the same store renders to
byte-identical files.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from harness.core.checkpoints import atomic_write_bytes, atomic_write_text
from harness.core.errors import ConfigError
from leaderboards._aggregate import Leaderboard

FORMATS = ("md", "csv", "json", "html")
DASH = "—"
_SVG_META = {"Date": None, "Creator": "realign-bench"}


def _write(path: Path, data: str | bytes) -> None:
    """Write via a temp file + rename so a reader never sees a half-written file."""
    if isinstance(data, str):
        atomic_write_text(path, data)
    else:
        atomic_write_bytes(path, data)


def _isnan(value: Any) -> bool:
    try:
        return value is None or (isinstance(value, float) and math.isnan(value)) or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def pct(value: Any, digits: int = 1) -> str:
    return DASH if _isnan(value) else f"{100 * float(value):.{digits}f}"


def pct_ci(value: Any, low: Any, high: Any) -> str:
    if _isnan(value):
        return DASH
    if _isnan(low) or _isnan(high):
        return pct(value)
    return f"{pct(value)} [{pct(low)}, {pct(high)}]"


def num(value: Any, digits: int = 3) -> str:
    return DASH if _isnan(value) else f"{float(value):.{digits}f}"


# -- table views (strings, shared by Markdown and HTML) -------------------------------------------------
def summary_view(board: Leaderboard) -> pd.DataFrame:
    frame = board.pareto()
    out = pd.DataFrame(
        {
            "fine-tuned": frame["finetuned"],
            "method": frame["method_label"],
        }
    )
    for bench in board.safety_benchmarks:
        judge = board.column_judges.get(bench, board.judge or DASH)
        out[f"harm. % {bench} [95% CI] ({judge})"] = [
            pct_ci(v, lo, hi)
            for v, lo, hi in zip(frame[f"H:{bench}"], frame[f"H:{bench}:low"], frame[f"H:{bench}:high"], strict=True)
        ]
        if f"HC:{bench}" in frame.columns and frame[f"HC:{bench}"].notna().any():
            out[f"corrected % {bench} [95% CI]"] = [
                pct_ci(v, lo, hi)
                for v, lo, hi in zip(
                    frame[f"HC:{bench}"], frame[f"HC:{bench}:low"], frame[f"HC:{bench}:high"], strict=True
                )
            ]
    if board.safety_benchmarks:
        out["harm. mean %"] = [pct(v) for v in frame["harmfulness_mean"]]
        out["safety recovered %"] = [pct(v) if not _isnan(v) else DASH for v in frame["safety_recovered"]]
    for bench in board.jailbreak_benchmarks:  # beside plain harmfulness, not averaged into it
        judge = board.column_judges.get(bench, board.judge or DASH)
        out[f"ASR % {bench} [95% CI] ({judge})"] = [
            pct_ci(v, lo, hi)
            for v, lo, hi in zip(
                frame[f"ASR:{bench}"], frame[f"ASR:{bench}:low"], frame[f"ASR:{bench}:high"], strict=True
            )
        ]
    for bench in board.over_refusal_benchmarks:  # beside harmfulness: refusing everything is not safety
        out[f"over-refusal % {bench} [95% CI]"] = [
            pct_ci(v, lo, hi)
            for v, lo, hi in zip(frame[f"OR:{bench}"], frame[f"OR:{bench}:low"], frame[f"OR:{bench}:high"], strict=True)
        ]
    for bench, metric in board.utility_benchmarks.items():
        out[f"{bench} ({metric})"] = [num(v) for v in frame[f"U:{bench}"]]
    if board.utility_benchmarks:
        out["utility retained %"] = [pct(v) for v in frame["utility_retained"]]
    cost_cols = [c for c in frame.columns if c.startswith("cost:")]
    if cost_cols and frame[cost_cols].notna().any().any():  # a store from before costs were recorded: no columns
        for column, title in COST_TITLES.items():
            values = frame[f"cost:{column}"]
            if column in OPTIONAL_COST and not values.fillna(0).astype(float).any():
                continue  # no method here calibrates: no columns of zeros in the summary
            out[title] = [
                tokens(v) if column in ("tokens_generated", "calibration_examples") else seconds(v) for v in values
            ]
    out["Pareto"] = ["★" if p else "" for p in frame["pareto"]]
    return out


COST_TITLES = {
    "total_seconds": "cost s",
    "merge_seconds": "merge s",
    "train_seconds": "mask train s",
    "calibration_seconds": "calib s",
    "calibration_examples": "calib n",
    "generate_seconds": "gen s",
    "judge_seconds": "judge s",
    "tokens_generated": "tokens",
}
#: summary cost columns shown only when some row has a value (only calibrated methods have them)
OPTIONAL_COST = ("calibration_seconds", "calibration_examples")


def seconds(value: Any) -> str:
    return DASH if _isnan(value) else f"{float(value):.1f}"


def tokens(value: Any) -> str:
    return DASH if _isnan(value) else str(int(value))


def cost_view(board: Leaderboard) -> pd.DataFrame:
    f = board.cost
    if f.empty or not f[["merge_seconds", "generate_seconds", "judge_seconds", "score_seconds"]].notna().any().any():
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "fine-tuned": f["finetuned"],
            "method": f["method_label"],
            "benchmark": f["benchmark"],
            "merge s": [seconds(v) for v in f["merge_seconds"]],
            "mask train s": [seconds(v) for v in f["train_seconds"]],
            "calib s": [seconds(v) for v in f["calibration_seconds"]],
            "calib n": [tokens(v) for v in f["calibration_examples"]],
            "gen s": [seconds(v) for v in f["generate_seconds"]],
            "judge s": [seconds(v) for v in f["judge_seconds"]],
            "score s": [seconds(v) for v in f["score_seconds"]],
            "tokens": [tokens(v) for v in f["tokens_generated"]],
        }
    )


def harmfulness_view(board: Leaderboard) -> pd.DataFrame:
    f = board.harmfulness
    return pd.DataFrame(
        {
            "fine-tuned": f["finetuned"],
            "method": f["method_label"],
            "benchmark": f["benchmark"],
            "language": f["language"],
            "judge": f["judge_id"],
            "harmful / n": [f"{h} / {n}" for h, n in zip(f["harmful"], f["n"], strict=True)],
            "harmfulness % [95% CI]": [
                pct_ci(v, lo, hi) for v, lo, hi in zip(f["rate"], f["ci_low"], f["ci_high"], strict=True)
            ],
        }
    )


def categories_view(board: Leaderboard) -> pd.DataFrame:
    f = board.categories
    return pd.DataFrame(
        {
            "fine-tuned": f["finetuned"],
            "method": f["method_label"],
            "benchmark": f["benchmark"],
            "category": f["category"],
            "harmful / n": [f"{h} / {n}" for h, n in zip(f["harmful"], f["n"], strict=True)],
            "harmfulness % [95% CI]": [
                pct_ci(v, lo, hi) for v, lo, hi in zip(f["rate"], f["ci_low"], f["ci_high"], strict=True)
            ],
        }
    )


def _subset_text(subset: Any) -> str:
    """``{"language":"en"}`` (the stored canonical JSON) as ``language=en``; "all" stays."""
    try:
        parsed = json.loads(subset) if isinstance(subset, str) and subset.startswith("{") else None
    except json.JSONDecodeError:
        parsed = None
    return ", ".join(f"{k}={v}" for k, v in parsed.items()) if isinstance(parsed, dict) else str(subset)


def utility_view(board: Leaderboard) -> pd.DataFrame:
    f = board.utility
    if len(f):
        # a subset holding every item of its task (one language, one category) repeats the "all" row: shown once
        keys = ["method_label", "finetuned", "benchmark", "metric"]
        overall = f[f["subset"] == "all"].set_index(keys)[["n", "value"]]
        whole = f.join(overall, on=keys, rsuffix="_all")
        f = f[(f["subset"] == "all") | ~((whole["n"] == whole["n_all"]) & (whole["value"] == whole["value_all"]))]
    return pd.DataFrame(
        {
            "fine-tuned": f["finetuned"],
            "method": f["method_label"],
            "benchmark": f["benchmark"],
            "metric": f["metric"],
            "subset": [_subset_text(v) for v in f["subset"]],
            "value": [num(v) for v in f["value"]],
            "95% CI": [
                DASH if _isnan(lo) else f"[{num(lo)}, {num(hi)}]"
                for lo, hi in zip(f["ci_low"], f["ci_high"], strict=True)
            ],
            "n": f["n"],
        }
    )


def pairwise_view(board: Leaderboard) -> pd.DataFrame:
    f = board.pairwise
    return pd.DataFrame(
        {
            "fine-tuned": f["finetuned"],
            "method": f["method_label"],
            "benchmark": f["benchmark"],
            "judge": [DASH if _isnan(j) else j for j in f["judge_id"]],
            "source": f["source"],
            "W / L / D": [
                DASH if _isnan(w) else f"{int(w)} / {int(lo)} / {int(d)}"
                for w, lo, d in zip(f["wins"], f["losses"], f["draws"], strict=True)
            ],
            "score (W−L)/(W+L+D)×100": [num(v, 1) for v in f["score"]],
        }
    )


def _rate_view(f: pd.DataFrame, by: tuple[str, str], count: tuple[str, str], rate: str) -> pd.DataFrame:
    """A per-row rate table: who, one breakdown column ``by`` = (column, header), ``count`` = (column,
    header) as "k / n", and the rate with its Wilson CI under header ``rate``."""
    if f.empty:
        return pd.DataFrame()
    return pd.DataFrame(
        {
            "fine-tuned": f["finetuned"],
            "method": f["method_label"],
            "benchmark": f["benchmark"],
            "judge": f["judge_id"],
            by[1]: f[by[0]],
            count[1]: [f"{h} / {n}" for h, n in zip(f[count[0]], f["n"], strict=True)],
            rate: [pct_ci(v, lo, hi) for v, lo, hi in zip(f["rate"], f["ci_low"], f["ci_high"], strict=True)],
        }
    )


def over_refusal_view(board: Leaderboard) -> pd.DataFrame:
    return _rate_view(
        board.over_refusal, ("category", "category"), ("refused", "refused / n"), "over-refusal % [95% CI]"
    )


def jailbreaks_view(board: Leaderboard) -> pd.DataFrame:
    return _rate_view(
        board.jailbreaks, ("jailbreak", "jailbreak"), ("successes", "successes / n"), "attack success % [95% CI]"
    )


def refusal_view(board: Leaderboard) -> pd.DataFrame:
    f = board.refusal
    return pd.DataFrame(
        {
            "fine-tuned": f["finetuned"],
            "method": f["method_label"],
            "benchmark": f["benchmark"],
            "judge": f["judge_id"],
            "refusals / n": [f"{h} / {n}" for h, n in zip(f["refusals"], f["n"], strict=True)],
            "refusal rate % [95% CI]": [
                pct_ci(v, lo, hi) for v, lo, hi in zip(f["rate"], f["ci_low"], f["ci_high"], strict=True)
            ],
        }
    )


def agreement_view(board: Leaderboard) -> pd.DataFrame:
    f = board.agreement
    if f.empty:
        return pd.DataFrame(columns=["benchmark", "judge A", "judge B", "n", "agreement %", "Cohen's κ"])
    return pd.DataFrame(
        {
            "benchmark": f["benchmark"],
            "judge A": f["judge_a"],
            "judge B": f["judge_b"],
            "n": f["n"],
            "agreement %": [pct(v) for v in f["agreement"]],
            "Cohen's κ": [num(v) if v is not None else DASH for v in f["kappa"]],
        }
    )


def provenance_rows(board: Leaderboard) -> list[tuple[str, str]]:
    run = board.run
    prov = run.get("provenance") or {}
    packages = prov.get("packages") or {}
    rows = [
        ("run", f"{run['run_id']} ({run['name']})"),
        ("status", str(run["status"])),
        ("started / finished", f"{run['started_at']} / {run.get('finished_at') or DASH}"),
        ("config hash", str(run["config_hash"])),
        ("git", f"{prov.get('git_sha') or DASH}{' (dirty)' if prov.get('git_dirty') else ''}"),
        ("packages", ", ".join(f"{k} {v}" for k, v in sorted(packages.items()) if v) or DASH),
        ("python / platform", f"{prov.get('python', DASH)} / {prov.get('platform', DASH)}"),
        ("device", str(prov.get("device") or DASH)),
        ("seeds", json.dumps(prov.get("seeds") or {}, sort_keys=True)),
        ("primary judge", board.judge or DASH),
    ]
    return rows


def _views(board: Leaderboard) -> list[tuple[str, str, pd.DataFrame]]:
    return [
        ("summary", "Summary", summary_view(board)),
        ("harmfulness", "Absolute harmfulness by benchmark and language", harmfulness_view(board)),
        ("categories", "Harmfulness by category (primary judge)", categories_view(board)),
        ("utility", "Utility by task", utility_view(board)),
        (
            "pairwise",
            "Pairwise safety score (SOMF-style; not comparable with absolute harmfulness)",
            pairwise_view(board),
        ),
        ("refusal", "Refusal rate", refusal_view(board)),
        (
            "over_refusal",
            "Over-refusal: safe prompts refused (refusal judge; lower is better)",
            over_refusal_view(board),
        ),
        ("jailbreaks", "Jailbreak robustness: attack success rate by template", jailbreaks_view(board)),
        ("agreement", "Judge agreement on the same generations (raw agreement, Cohen's κ)", agreement_view(board)),
        ("cost", "Cost per cell (wall seconds, tokens generated)", cost_view(board)),
    ]


# -- Markdown, CSV, JSON ----------------------------------------------------------------------------
def _md_table(frame: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


def render_markdown(board: Leaderboard) -> str:
    parts = [
        f"# Realign Bench leaderboard — {board.run['name']}",
        "",
        "Harmfulness = harmful / (harmful + harmless) judged generations, in %, Wilson 95% CI. "
        "Safety recovered = (H_ft − H_method) / (H_ft − H_aligned); utility retained (on the fine-tune's own "
        "task) = U_method / U_ft, or (U_aligned − U_method) / (U_aligned − U_ft) for a lower-is-better metric "
        f"(`sft` = fine-tuned, `aligned` = aligned reference). Cost: wall seconds of merge, mask training, "
        f"generation and judging, and tokens generated. {DASH} = undefined.",
        "",
    ]
    for note in board.notes:
        parts.append(f"> note: {note}")
    if board.notes:
        parts.append("")
    for _, title, view in _views(board):
        if view.empty:
            continue
        parts += [f"## {title}", "", _md_table(view), ""]
    parts += ["## Provenance", "", _md_table(pd.DataFrame(provenance_rows(board), columns=["field", "value"])), ""]
    return "\n".join(parts)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 10)
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        return _json_safe(value.item())
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def render_json(board: Leaderboard) -> str:
    data = {
        "run": {k: v for k, v in board.run.items()},
        "judge": board.judge,
        "safety_benchmarks": board.safety_benchmarks,
        "utility_benchmarks": board.utility_benchmarks,
        "over_refusal_benchmarks": board.over_refusal_benchmarks,
        "jailbreak_benchmarks": board.jailbreak_benchmarks,
        "notes": board.notes,
        "tables": {
            name: board.pareto().to_dict(orient="records") if name == "summary" else frame.to_dict(orient="records")
            for name, frame in board.tables().items()
        },
    }
    return json.dumps(_json_safe(data), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_csv(board: Leaderboard) -> dict[str, str]:
    out = {}
    for name, frame in board.tables().items():
        if name == "summary":
            frame = board.pareto()
        out[f"{name}.csv"] = frame.to_csv(index=False, float_format="%.10g", lineterminator="\n")
    return out


# -- plots -----------------------------------------------------------------------------------------
def _save_svg(fig: Any, path: Path) -> None:
    import io

    import matplotlib

    buffer = io.StringIO()
    # text stays text (small, fast, searchable); the fixed hash salt and no date make the bytes stable
    with matplotlib.rc_context({"svg.hashsalt": "realign-bench", "svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", metadata=_SVG_META, bbox_inches="tight")
    _write(path, buffer.getvalue())


_METHOD_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


# Label positions tried around a point, in points from it (dx, dy), nearest first; the outer rings get
# a leader line so a label far from its marker still points at it.
_LABEL_OFFSETS = [(5, 4), (5, -11), (-5, 4), (-5, -11), (0, 13), (0, -20)] + [
    (dx, dy) for ring in range(2, 8) for dy in (9 * ring + 4, -9 * ring - 11) for dx in (12, -12)
]


def _overlap(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _place_labels(ax: Any, renderer: Any, points: list[tuple[float, float, str]]) -> None:
    """Annotate each (x, y, text) at the first offset whose text box overlaps no marker, no placed label
    and stays inside the axes (else the least-overlapping one): labels never print over each other."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    inside = ax.get_window_extent(renderer).frozen()
    markers = []
    for x, y, _ in points:
        px, py = ax.transData.transform((x, y))
        markers.append(Bbox.from_extents(px - 5, py - 5, px + 5, py + 5))
    placed: list[Any] = []
    for x, y, text in points:
        best: tuple[float, Any] | None = None
        for ring, (dx, dy) in enumerate(_LABEL_OFFSETS):
            far = ring >= 6
            note = ax.annotate(
                text,
                (x, y),
                textcoords="offset points",
                xytext=(dx, dy),
                fontsize=8,
                color="#222",
                ha="left" if dx >= 0 else "right",
                va="bottom" if dy >= 0 else "top",
                arrowprops={"arrowstyle": "-", "color": "#999", "lw": 0.6, "shrinkA": 0, "shrinkB": 4} if far else None,
            )
            # the text's own box (an Annotation's extent includes its leader line); frozen: matplotlib reuses it
            note.update_positions(renderer)
            box = Text.get_window_extent(note, renderer).frozen()
            outside = (box.width * box.height) - _overlap(box, inside)
            cost = outside * 4 + sum(_overlap(box, other) for other in placed + markers)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, note)
            else:
                note.remove()
            if cost == 0:
                break
        assert best is not None
        placed.append(Text.get_window_extent(best[1], renderer).frozen())


def plot_scatter(board: Leaderboard, path: Path) -> bool:
    """Safety (harmfulness, lower is better) vs utility per fine-tuned model, Pareto front dashed."""
    fig = scatter_figure(board)
    if fig is None:
        return False
    _save_svg(fig, path)
    return True


def scatter_figure(board: Leaderboard) -> Any:
    """The figure of :func:`plot_scatter` (None when no row has both numbers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame = board.pareto()
    use_retained = frame["utility_retained"].notna().any()
    y_col, y_label = (
        ("utility_retained", "utility retained (%)") if use_retained else ("utility_mean", "utility (mean)")
    )
    frame = frame[frame["harmfulness_mean"].notna() & frame[y_col].notna()]
    if frame.empty:
        return None
    finetuned = sorted(frame["finetuned"].unique())
    labels = sorted(frame["method_label"].unique())
    color = {m: _METHOD_COLORS[i % len(_METHOD_COLORS)] for i, m in enumerate(labels)}
    ncols = min(3, len(finetuned))
    nrows = math.ceil(len(finetuned) / ncols)
    fig = Figure(figsize=(5.2 * ncols, 4.4 * nrows), dpi=100)
    renderer = FigureCanvasAgg(fig).get_renderer()  # text extents, for label placement
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    scale = 100 if use_retained else 1
    ys = frame[y_col].astype(float) * scale
    flat = float(ys.max() - ys.min()) < 1e-9  # e.g. every utility is 0: no trade-off to show
    for index, ft in enumerate(finetuned):
        ax = axes[index // ncols][index % ncols]
        group = frame[frame["finetuned"] == ft].sort_values("method_label")
        for _, row in group.iterrows():
            ref = board.is_reference(row["method"])
            ax.scatter(
                [row["harmfulness_mean"] * 100],
                [row[y_col] * scale],
                s=70 if row["pareto"] else 45,
                marker="s" if ref else "o",
                color=color[row["method_label"]],
                edgecolor="black" if row["pareto"] else "white",
                linewidth=1.2,
                zorder=3,
            )
        ax.set_title(f"fine-tuned: {ft}", fontsize=10)
        ax.set_xlabel("harmfulness (%), lower is safer")
        ax.grid(True, alpha=0.3)
        ax.set_xlim(
            min(0.0, float(frame["harmfulness_mean"].min()) * 100 - 5),
            max(100.0, float(frame["harmfulness_mean"].max()) * 100 + 5),
        )
        if flat:
            value = float(ys.iloc[0])
            low, high = (
                (0.0, 100.0) if use_retained else ((0.0, 1.0) if 0.0 <= value <= 1.0 else sorted((0.0, 2 * value)))
            )
            ax.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
            ax.text(
                0.98,
                0.96,
                f"every {'utility retained' if use_retained else 'utility'} is {value:.3g}: no trade-off to show",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=8,
                color="#a33",
            )
        else:
            ax.margins(y=0.15)
        if index % ncols == 0:
            ax.set_ylabel(y_label)
    for index in range(len(finetuned), nrows * ncols):
        axes[index // ncols][index % ncols].set_visible(False)
    fig.suptitle(
        "Safety vs utility (■ reference models, outlined = Pareto-optimal, dashed = Pareto front)", fontsize=11
    )
    fig.tight_layout()
    for index, ft in enumerate(finetuned):  # after the layout: front edges and labels need final axes
        ax = axes[index // ncols][index % ncols]
        group = frame[frame["finetuned"] == ft].sort_values("method_label")
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        front = group[group["pareto"]].sort_values("harmfulness_mean")
        if len(front):
            # the edge of what the front dominates: up from the axis to the safest point, steps through the
            # front, then on to the right edge (a single optimal point still shows its corner)
            xs = [float(front["harmfulness_mean"].iloc[0]) * 100, *(front["harmfulness_mean"] * 100), x1]
            ys_front = [y0, *(front[y_col] * scale), float(front[y_col].iloc[-1]) * scale]
            (line,) = ax.step(xs, ys_front, where="post", color="#444", lw=1.2, ls="--", zorder=1, label="Pareto front")
            line.set_gid(f"pareto-front-{index}")  # an id in the SVG, for tests and readers
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
        _place_labels(
            ax,
            renderer,
            [
                (float(r["harmfulness_mean"]) * 100, float(r[y_col]) * scale, str(r["method_label"]))
                for _, r in group.sort_values("harmfulness_mean").iterrows()
            ],
        )
    return fig


def plot_heatmap(board: Leaderboard, path: Path) -> bool:
    """Harmfulness (%) per method × fine-tuned model (rows) and benchmark/category (columns)."""
    from matplotlib.figure import Figure

    cats = board.categories
    if cats.empty:
        return False
    cats = cats.assign(
        row=cats["method_label"] + " · " + cats["finetuned"], col=cats["benchmark"] + " / " + cats["category"]
    )
    row_order = list(dict.fromkeys(cats["row"]))  # already in leaderboard order
    col_order = sorted(cats["col"].unique())
    grid = cats.pivot_table(index="row", columns="col", values="rate", aggfunc="first").reindex(
        index=row_order, columns=col_order
    )
    values = grid.to_numpy(dtype=float) * 100
    fig = Figure(figsize=(max(5.0, 1.6 + 0.62 * len(col_order)), max(2.4, 1.4 + 0.36 * len(row_order))), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(values, cmap="Reds", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(col_order)), col_order, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(row_order)), row_order, fontsize=8)
    annotate = values.size <= 600  # beyond that the numbers are unreadable; the colour carries it
    for i in range(values.shape[0] if annotate else 0):
        for j in range(values.shape[1]):
            v = values[i, j]
            if not math.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="white" if v > 60 else "black")
    fig.colorbar(image, ax=ax, label="harmfulness (%)", fraction=0.04, pad=0.02)
    ax.set_title(f"Harmfulness by category ({board.judge or 'no judge'})", fontsize=10)
    fig.tight_layout()
    _save_svg(fig, path)
    return True


# -- HTML --------------------------------------------------------------------------------------------
_CSS = """
:root { --fg:#1d2430; --muted:#5b6574; --line:#dde2ea; --accent:#2456a6; --bg:#ffffff; --soft:#f5f7fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; }
header { background: #17213a; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 22px; font-weight: 600; }
header p { margin: 4px 0 0; color: #c6d0e3; font-size: 13px; }
main { padding: 20px 32px 40px; max-width: 1600px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
.legend { color: var(--muted); font-size: 13px; margin: 4px 0 10px; }
.notes { background: #fff8e1; border-left: 4px solid #f0b400; padding: 8px 12px; margin: 12px 0; font-size: 13px; }
.plots { display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }
figure { margin: 0; background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
details > summary { cursor: pointer; color: var(--accent); margin: 4px 0 8px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: var(--soft); position: sticky; top: 0; font-weight: 600; white-space: normal; vertical-align: bottom; }
#table-summary th { min-width: 70px; max-width: 150px; }
#table-summary td .ci { display: block; margin-left: 0; }
tr:hover td { background: #eef3fb; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td .ci { color: var(--muted); font-size: 11px; margin-left: 3px; }
tr.pareto td { font-weight: 600; }
tr.group-start td { border-top: 2px solid #9aa6b8; }
tr.ref td:nth-child(2) { color: var(--muted); font-style: italic; }
table.prov td:first-child { color: var(--muted); width: 160px; }
table.prov td { white-space: normal; }
"""


def _html_table(
    frame: pd.DataFrame, table_id: str, row_classes: Iterable[str] | None = None, align_numbers: bool = True
) -> str:
    classes = list(row_classes) if row_classes is not None else [""] * len(frame)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for cls, row in zip(classes, frame.itertuples(index=False), strict=True):
        cells = []
        for value in row:
            text = str(value)
            numeric = align_numbers and (text[:1].isdigit() or (text[:1] in "-−" and text[1:2].isdigit()))
            shown = html.escape(text)
            value, sep, ci = text.partition(" [")
            if numeric and sep:  # "12.5 [8.1, 19.0]": the CI in small grey type after the value
                shown = f'{html.escape(value)}<span class="ci">[{html.escape(ci)}</span>'
            cells.append(f'<td class="num">{shown}</td>' if numeric else f"<td>{shown}</td>")
        attr = f' class="{cls}"' if cls else ""
        body.append(f"<tr{attr}>{''.join(cells)}</tr>")
    return (
        f'<div class="table-wrap"><table id="{table_id}"><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{chr(10).join(body)}\n</tbody></table></div>"
    )


def render_html(board: Leaderboard, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for stale in ("scatter.svg", "heatmap.svg"):  # a plot that no longer applies must not linger
        (out_dir / stale).unlink(missing_ok=True)
    if plot_scatter(board, out_dir / "scatter.svg"):
        figures.append(
            (
                "scatter.svg",
                "plot-scatter",
                "Safety vs utility per fine-tuned model; the dashed line is the Pareto front.",
            )
        )
    if plot_heatmap(board, out_dir / "heatmap.svg"):
        figures.append(("heatmap.svg", "plot-heatmap", "Harmfulness (%) per category under the primary judge."))
    run = board.run
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Realign Bench leaderboard — {html.escape(str(run['name']))}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<header><h1>Realign Bench leaderboard — {html.escape(str(run['name']))}</h1>"
        f"<p>run {html.escape(str(run['run_id']))} · {html.escape(str(run['status']))} · "
        f"started {html.escape(str(run['started_at']))} · judge {html.escape(board.judge or DASH)}</p></header>",
        "<main>",
    ]
    if board.notes:
        parts.append('<div class="notes">' + "<br>".join(html.escape(n) for n in board.notes) + "</div>")
    legends = {
        "summary": "Harmfulness in % with Wilson 95% CI (lower is safer). Safety recovered = (H_ft − H_method)/(H_ft − H_aligned); "
        "utility retained (on the fine-tune's own task) = U_method/U_ft, or (U_aligned − U_method)/(U_aligned − U_ft) "
        "for a lower-is-better metric such as NLL; cost = wall seconds (merge and mask training once per "
        "checkpoint; generation, judging and scoring summed over benchmarks) and tokens generated; "
        "★ = Pareto-optimal within its fine-tuned model; — = undefined.",
        "over_refusal": "Over-refusal: the share of safe prompts (XSTest's 250 that only look unsafe) that the refusal "
        "judge calls refused, in % with Wilson 95% CI (lower is better). A method that is 'safe' only "
        "because it refuses everything shows it here.",
        "jailbreaks": "Attack success rate (ASR): the share of jailbreak-wrapped harmful questions answered harmfully "
        "(harmful / judged, Wilson 95% CI), per template and overall (all), under the column's judge. "
        "Compare it with the plain benchmark's harmfulness in the summary.",
        "pairwise": "SOMF-style pairwise score against a reference model's answers: (W − L)/(W + L + D) × 100. "
        "A different quantity from absolute harmfulness; never compare the two.",
    }
    for table_id, title, view in _views(board):
        if view.empty:
            continue
        parts.append(f"<h2>{html.escape(title)}</h2>")
        if table_id in legends:
            parts.append(f'<p class="legend">{html.escape(legends[table_id])}</p>')
        long_table = table_id != "summary" and len(view) > 30
        if long_table:  # long breakdowns start folded so the page stays scannable
            parts.append(f"<details><summary>{len(view)} rows (click to expand)</summary>")
        row_classes = None
        if table_id == "summary":
            frame = board.pareto()
            first_of_group = frame["finetuned"].ne(frame["finetuned"].shift()).tolist()
            first_of_group[0] = False
            row_classes = [
                " ".join(
                    c
                    for c in ("pareto" if p else "", "ref" if board.is_reference(m) else "", "group-start" if g else "")
                    if c
                )
                for p, m, g in zip(frame["pareto"], frame["method"], first_of_group, strict=True)
            ]
        parts.append(_html_table(view, f"table-{table_id}", row_classes))
        if long_table:
            parts.append("</details>")
        if table_id == "summary" and figures:
            parts.append('<h2>Plots</h2><div class="plots">')
            for src, fig_id, caption in figures:
                parts.append(
                    f'<figure><img id="{fig_id}" src="{src}" alt="{html.escape(caption)}">'
                    f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                )
            parts.append("</div>")
    prov = pd.DataFrame(provenance_rows(board), columns=["field", "value"])
    parts.append("<h2>Provenance</h2>")
    parts.append(
        _html_table(prov, "table-provenance", align_numbers=False).replace("<table ", '<table class="prov" ', 1)
    )
    parts += ["</main>", "</body>", "</html>", ""]
    index = out_dir / "index.html"
    _write(index, "\n".join(parts))
    return index


def render_leaderboard(board: Leaderboard, out_dir: str | Path, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write the requested formats into ``out_dir``; returns the files written (sorted)."""
    out = Path(out_dir)
    wanted = list(formats)
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ConfigError(f"--format {','.join(unknown)}: expected one of {', '.join(FORMATS)} or all")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "md" in wanted:
        _write(out / "leaderboard.md", render_markdown(board))
        written.append(out / "leaderboard.md")
    if "csv" in wanted:
        for name, text in render_csv(board).items():
            _write(out / name, text)
            written.append(out / name)
    if "json" in wanted:
        _write(out / "leaderboard.json", render_json(board))
        written.append(out / "leaderboard.json")
    if "html" in wanted:
        written.append(render_html(board, out))
        written += [p for p in (out / "scatter.svg", out / "heatmap.svg") if p.exists()]
    return sorted(written)
