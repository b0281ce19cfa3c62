"""Results store, leaderboard and regression tracking for Realign Bench.

``Store`` keeps runs, cells, items, generations, verdicts and scores (SQLite by default);
``build_leaderboard`` aggregates a run into tables and ``render_leaderboard`` writes Markdown, CSV,
JSON and a static HTML site; ``compare_runs`` pairs two runs item by item and flags regressions.
"""

from leaderboards._aggregate import (
    Leaderboard,
    build_leaderboard,
    safety_recovered,
    utility_ratio,
    utility_retained,
)
from leaderboards._compare import CompareReport, GroupResult, RunRef, compare_runs, resolve_run_ref
from leaderboards._render import FORMATS, render_leaderboard
from leaderboards._schema import SCHEMA_VERSION
from leaderboards._stats import holm, mcnemar, paired_bootstrap_ci, pareto_front, wilson_interval
from leaderboards._store import CellRecord, ItemScore, Store, collect_provenance

__all__ = [
    "FORMATS",
    "SCHEMA_VERSION",
    "CellRecord",
    "CompareReport",
    "GroupResult",
    "ItemScore",
    "Leaderboard",
    "RunRef",
    "Store",
    "build_leaderboard",
    "collect_provenance",
    "compare_runs",
    "holm",
    "mcnemar",
    "paired_bootstrap_ci",
    "pareto_front",
    "render_leaderboard",
    "resolve_run_ref",
    "safety_recovered",
    "utility_ratio",
    "utility_retained",
    "wilson_interval",
]
