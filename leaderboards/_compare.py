"""Paired comparison of two runs: a regression gate for a new technique.

Items are paired by (method, its parameters, fine-tuned model, benchmark, item id, sample): a cell
pairs only with the cell of the same method *and* parameters, so ``resta(gamma=0.5)`` never meets
``resta(gamma=1.0)`` even under one label. Tracked metrics are *harmfulness* (the judge's
harmful/harmless verdict; up is worse) and every per-item utility score the scorers stored (GSM8K
``gsm8k_strict``/``gsm8k_flexible`` 0/1, ``pass@k`` per problem, log-likelihood ``acc`` 0/1, per-item
``nll``). A metric's direction is its scorer's ``higher_is_better``, never guessed from its name.

Per group (default: per benchmark and metric) we report the mean paired difference with a seeded
paired-bootstrap CI and a paired test: McNemar for 0/1 outcomes (exact below 25 discordant pairs,
χ² above), the Wilcoxon signed-rank test (or, with ``continuous="bootstrap"``, a paired bootstrap
test) for continuous ones; p-values are Holm-corrected across all groups. The candidate *regresses*
when some group is worse with a Holm-adjusted p below alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.judges._cards import corrected_rate, find_card
from harness.core.errors import ConfigError, StoreError
from leaderboards._aggregate import _default_judge
from leaderboards._stats import (
    holm,
    mcnemar,
    paired_bootstrap_ci,
    paired_bootstrap_pvalue,
    wilcoxon_signed_rank,
)
from leaderboards._store import Store

PAIR_KEYS = ["method", "params", "finetuned", "benchmark", "item_id", "sample_index"]
CELL_KEYS = ["method", "params", "finetuned", "benchmark"]
CONTINUOUS_TESTS = ("wilcoxon", "bootstrap")
FLIP_COLUMNS = [
    "method_label",
    *PAIR_KEYS,
    "metric",
    "direction",
    "baseline",
    "candidate",
    "baseline_completion",
    "candidate_completion",
]
GROUP_CHOICES = ("benchmark", "method", "finetuned")
_GROUP_COLUMN = {"benchmark": "benchmark", "method": "method_label", "finetuned": "finetuned"}


@dataclass(frozen=True)
class RunRef:
    """One side of a comparison: a store and one of its runs."""

    store: Store
    run_id: str

    @property
    def label(self) -> str:
        return f"{self.store.location}@{self.run_id}"


def resolve_run_ref(spec: str | RunRef, store: Store | str | Path | None = None) -> RunRef:
    """``spec`` is a store file (its latest run), ``FILE@RUN`` or a run id (prefix) in ``store``."""
    if isinstance(spec, RunRef):
        return spec
    path, sep, run = spec.rpartition("@")
    if sep and Path(path).is_file():
        s = Store(path, create=False)
        return RunRef(s, s.resolve_run(run))
    if Path(spec).is_file():
        s = Store(spec, create=False)
        return RunRef(s, s.resolve_run(None))
    if store is None:
        raise StoreError(f"{spec!r}: neither a store file nor FILE@RUN; to name a run id, pass --store FILE")
    s = store if isinstance(store, Store) else Store(store, create=False)
    return RunRef(s, s.resolve_run(spec))


@dataclass
class GroupResult:
    group: dict[str, str]
    metric: str
    higher_is_worse: bool
    n: int
    baseline_mean: float
    candidate_mean: float
    diff: float  # candidate − baseline
    ci_low: float
    ci_high: float
    worse_flips: int  # items whose outcome got worse
    better_flips: int
    p_value: float
    test: str
    p_holm: float = math.nan
    significant: bool = False
    verdict: str = "same"  # worse | better | same
    # Rogan–Gladen harmfulness (judge error corrected with the judge's card), point and 95% CI; None without a card.
    baseline_corrected: tuple[float | None, float | None, float | None] | None = None
    candidate_corrected: tuple[float | None, float | None, float | None] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in self.__dict__.items()}


@dataclass
class CompareReport:
    baseline: str
    candidate: str
    alpha: float
    judge: str | None
    results: list[GroupResult]
    flipped: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[GroupResult]:
        return [r for r in self.results if r.verdict == "worse"]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    def to_dict(self, max_flips: int | None = None) -> dict[str, Any]:
        flips = self.flipped if max_flips is None else self.flipped.head(max_flips)
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "alpha": self.alpha,
            "judge": self.judge,
            "regressed": self.regressed,
            "results": [r.as_dict() for r in self.results],
            "flipped": flips.astype(object).where(flips.notna(), None).to_dict(orient="records"),
            "notes": self.notes,
        }


def _outcomes(ref: RunRef, judge: str | None) -> tuple[pd.DataFrame, str | None, dict[str, bool | None]]:
    """Per-item outcomes (columns: PAIR_KEYS, method_label, metric, outcome), the judge used, and each
    metric's direction (True: higher is worse; None: no scorer row says)."""
    all_cells = ref.store.cells(ref.run_id)
    done = all_cells[all_cells["status"] == "done"]
    cells = done[["cell_id", "method", "params", "method_label", "finetuned", "benchmark_label"]].rename(
        columns={"benchmark_label": "benchmark"}
    )
    verdicts = ref.store.verdicts_frame(ref.run_id)
    verdicts = verdicts[verdicts["label"].isin(["harmful", "harmless"])]
    if judge is None and len(verdicts):
        judge, _ = _default_judge(done, verdicts.groupby("judge_id").size())
    verdicts = verdicts[verdicts["judge_id"] == judge]
    harm = verdicts.assign(metric="harmfulness", outcome=(verdicts["label"] == "harmful").astype(float))
    item_scores = ref.store.item_scores_frame(ref.run_id).rename(columns={"value": "outcome"})
    frame = pd.concat(
        [
            harm[["cell_id", "item_id", "sample_index", "metric", "outcome"]],
            item_scores[["cell_id", "item_id", "sample_index", "metric", "outcome"]],
        ],
        ignore_index=True,
    )
    frame = frame.merge(cells, on="cell_id", how="inner")
    directions: dict[str, bool | None] = {"harmfulness": True}
    scores = ref.store.scores_frame(ref.run_id)
    for metric in item_scores["metric"].unique():
        rows = scores[scores["metric"] == metric]
        directions[str(metric)] = not bool(rows["higher_is_better"].iloc[0]) if len(rows) else None
    return frame, judge, directions


def _completions(ref: RunRef) -> pd.DataFrame:
    items = ref.store.items_frame(ref.run_id, with_completions=True)
    cells = ref.store.cells(ref.run_id)[["cell_id", "method", "params", "finetuned", "benchmark_label"]]
    frame = items.merge(cells.rename(columns={"benchmark_label": "benchmark_cell"}), on="cell_id")
    frame = frame.drop(columns=["benchmark"]).rename(columns={"benchmark_cell": "benchmark"})
    return frame[[*PAIR_KEYS, "completion"]].dropna(subset=["sample_index"]).astype({"sample_index": int})


def _truncate(text: Any, width: int) -> str:
    if not isinstance(text, str):
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _param_mismatches(base: pd.DataFrame, cand: pd.DataFrame) -> list[str]:
    """Notes for cells that share a label but not their method parameters (they are not paired)."""
    cols = ["method_label", "finetuned", "benchmark", "method", "params"]
    b, c = base[cols].drop_duplicates(), cand[cols].drop_duplicates()
    joined = b.merge(c, on=["method_label", "finetuned", "benchmark"], suffixes=("_base", "_cand"))
    differ = joined[(joined["method_base"] != joined["method_cand"]) | (joined["params_base"] != joined["params_cand"])]
    notes = []
    for (label, base_params, cand_params), _ in differ.groupby(
        ["method_label", "params_base", "params_cand"], sort=True
    ):
        notes.append(f"{label}: not paired, its parameters differ (baseline {base_params}, candidate {cand_params})")
    return notes


def compare_runs(
    baseline: str | RunRef,
    candidate: str | RunRef,
    *,
    store: Store | str | Path | None = None,
    alpha: float = 0.05,
    metrics: Sequence[str] | None = None,
    judge: str | None = None,
    by: Sequence[str] = ("benchmark",),
    resamples: int = 2000,
    seed: int = 0,
    test: str = "auto",
    continuous: str = "wilcoxon",
    truncate: int = 160,
) -> CompareReport:
    """Pair ``baseline`` and ``candidate`` item by item and test every tracked metric for a change.

    ``test`` is the McNemar variant for 0/1 metrics; ``continuous`` the test for the others
    (``wilcoxon`` signed-rank, or ``bootstrap``: the paired bootstrap test of the mean difference).
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"--alpha {alpha}: expected a value in (0, 1)")
    bad = [b for b in by if b not in GROUP_CHOICES]
    if bad:
        raise ConfigError(f"--by {','.join(bad)}: expected some of {', '.join(GROUP_CHOICES)}")
    if test not in ("auto", "exact", "chi2"):
        raise ConfigError(f"--test {test!r}: expected auto, exact or chi2")
    if continuous not in CONTINUOUS_TESTS:
        raise ConfigError(f"--continuous {continuous!r}: expected {' or '.join(CONTINUOUS_TESTS)}")
    base_ref, cand_ref = resolve_run_ref(baseline, store), resolve_run_ref(candidate, store)
    base, judge, directions = _outcomes(base_ref, judge)
    cand, _, cand_directions = _outcomes(cand_ref, judge)
    directions.update({k: v for k, v in cand_directions.items() if directions.get(k) is None})
    notes: list[str] = []
    undirected = sorted(m for m, d in directions.items() if d is None)
    if undirected:  # a per-item metric no scorer row describes: its direction is unknown, so it is not tested
        notes.append(f"per-item metrics without a scorer row giving their direction left out: {', '.join(undirected)}")
        base, cand = base[~base["metric"].isin(undirected)], cand[~cand["metric"].isin(undirected)]
    if metrics:
        known = set(base["metric"]) | set(cand["metric"])
        missing = [m for m in metrics if m not in known]
        if missing:
            raise ConfigError(
                f"--metric {','.join(missing)}: not in either run (metrics: {', '.join(sorted(known)) or 'none'})"
            )
        base, cand = base[base["metric"].isin(metrics)], cand[cand["metric"].isin(metrics)]

    keys = [*PAIR_KEYS, "metric"]
    paired = base.merge(cand, on=keys, how="outer", suffixes=("_base", "_cand"), indicator=True)
    only_base = int((paired["_merge"] == "left_only").sum())
    only_cand = int((paired["_merge"] == "right_only").sum())
    if only_base or only_cand:
        notes.append(f"unpaired outcomes left out: {only_base} only in the baseline, {only_cand} only in the candidate")
        notes += _param_mismatches(base, cand)
    paired = paired[paired["_merge"] == "both"].drop(columns="_merge")
    # the baseline's label names the pair (the candidate may label the same method and parameters otherwise)
    paired["method_label"] = paired["method_label_base"].fillna(paired["method_label_cand"])
    paired = paired.drop(columns=["method_label_base", "method_label_cand"])
    if paired.empty:
        notes.append("no paired outcomes: nothing to compare")

    group_cols = [_GROUP_COLUMN[b] for b in by]
    results: list[GroupResult] = []
    card = find_card(judge) if judge else None
    validation = card.rows() if card is not None else []
    if judge and card is None:
        notes.append(f"no judge card for {judge}: no error-corrected harmfulness")
    for key, group in paired.groupby([*group_cols, "metric"], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        metric = str(key[-1])
        higher_is_worse = bool(directions.get(metric))
        b_out, c_out = group["outcome_base"].to_numpy(dtype=float), group["outcome_cand"].to_numpy(dtype=float)
        up, down = int((c_out > b_out).sum()), int((c_out < b_out).sum())  # discordant pairs, for 0/1
        mean_diff, low, high = paired_bootstrap_ci(b_out, c_out, resamples=resamples, seed=seed)
        binary = bool(np.isin(b_out, (0.0, 1.0)).all() and np.isin(c_out, (0.0, 1.0)).all())
        if binary:
            p, used = mcnemar(up, down, method=test)
        elif continuous == "wilcoxon":
            p, used = wilcoxon_signed_rank(b_out, c_out), "wilcoxon"
        else:
            p, used = paired_bootstrap_pvalue(b_out, c_out, resamples=resamples, seed=seed), "bootstrap"
        results.append(
            GroupResult(
                group=dict(zip(by, (str(k) for k in key[:-1]), strict=True)),
                metric=metric,
                higher_is_worse=higher_is_worse,
                n=len(group),
                baseline_mean=float(b_out.mean()),
                candidate_mean=float(c_out.mean()),
                diff=mean_diff,
                ci_low=low,
                ci_high=high,
                worse_flips=up if higher_is_worse else down,
                better_flips=down if higher_is_worse else up,
                p_value=p,
                test=used,
            )
        )
        if metric == "harmfulness" and validation:
            for attr, out in (("baseline_corrected", b_out), ("candidate_corrected", c_out)):
                rg = corrected_rate((out == 1).tolist(), validation, n_boot=1000, seed=seed)
                setattr(results[-1], attr, (rg.corrected, rg.low, rg.high))
    for result, adjusted in zip(results, holm([r.p_value for r in results]), strict=True):
        result.p_holm = adjusted
        result.significant = adjusted < alpha
        if result.significant and result.diff != 0:
            got_worse = (result.diff > 0) == result.higher_is_worse
            result.verdict = "worse" if got_worse else "better"

    # flipped items: changed 0/1 outcomes (a continuous metric changes on nearly every item; its
    # groups report how many items moved each way instead)
    binary_rows = paired["outcome_base"].isin([0.0, 1.0]) & paired["outcome_cand"].isin([0.0, 1.0])
    flips = paired[binary_rows & (paired["outcome_base"] != paired["outcome_cand"])].copy()
    if len(flips):
        worse = [
            (c > b) == bool(directions.get(m))
            for b, c, m in zip(flips["outcome_base"], flips["outcome_cand"], flips["metric"], strict=True)
        ]
        flips["direction"] = ["worse" if w else "better" for w in worse]
        flips = flips.astype({"sample_index": int})
        flips = flips.merge(
            _completions(base_ref).rename(columns={"completion": "baseline_completion"}), on=PAIR_KEYS, how="left"
        )
        flips = flips.merge(
            _completions(cand_ref).rename(columns={"completion": "candidate_completion"}), on=PAIR_KEYS, how="left"
        )
        for col in ("baseline_completion", "candidate_completion"):
            flips[col] = [_truncate(t, truncate) for t in flips[col]]
        flips = flips.rename(columns={"outcome_base": "baseline", "outcome_cand": "candidate"})
        flips = flips[[*FLIP_COLUMNS]]
        flips = flips.sort_values(
            ["direction", "metric", "method_label", *PAIR_KEYS],
            ascending=[False, *([True] * (2 + len(PAIR_KEYS)))],
            kind="mergesort",
        ).reset_index(drop=True)
    else:
        flips = pd.DataFrame(columns=FLIP_COLUMNS)
    return CompareReport(
        baseline=base_ref.label,
        candidate=cand_ref.label,
        alpha=alpha,
        judge=judge,
        results=results,
        flipped=flips,
        notes=notes,
    )
