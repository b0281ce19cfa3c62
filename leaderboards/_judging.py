"""What the leaderboard knows about its judges: declared languages, agreement, error-corrected harmfulness.

Declared languages and sensitivity/specificity come from the judge's card (benchmarks.judges card store,
``$REALIGN_JUDGE_CARDS`` else ``benchmarks/judges/cards``), looked up by judge id.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pandas as pd

HARM = ("harmful", "harmless")


def judge_card(judge_id: str, cards: Path | None = None) -> Any:
    from benchmarks.judges._cards import find_card

    return find_card(judge_id, cards)


def declared_languages(judge_id: str, cards: Path | None = None) -> set[str] | None:
    """Languages the judge's card declares; None when it has no card (then nothing is masked, a note says so)."""
    card = judge_card(judge_id, cards)
    return set(card.languages) if card is not None else None


def agreement_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Raw agreement and Cohen's κ for every pair of harm judges on the same generations, per benchmark."""
    from benchmarks.judges._cards import cohen_kappa

    rows: list[dict[str, Any]] = []
    harm = verdicts[verdicts["label"].isin(HARM)]
    for bench, group in harm.groupby("benchmark", sort=True):
        wide = group.assign(harmful=group["label"] == "harmful").pivot_table(
            index=["cell_id", "item_id", "sample_index"], columns="judge_id", values="harmful", aggfunc="first")
        for a, b in itertools.combinations(sorted(wide.columns), 2):
            both = wide[[a, b]].dropna()
            if both.empty:
                continue
            x, y = both[a].astype(bool).tolist(), both[b].astype(bool).tolist()
            rows.append({"benchmark": bench, "judge_a": a, "judge_b": b, "n": len(x),
                         "agreement": sum(p == q for p, q in zip(x, y, strict=True)) / len(x),
                         "kappa": cohen_kappa(x, y)})
    return pd.DataFrame(rows, columns=["benchmark", "judge_a", "judge_b", "n", "agreement", "kappa"])


def corrected_cells(verdicts: pd.DataFrame, judge_id: str, keys: list[str], languages: list[str],
                    cards: Path | None = None, n_boot: int = 1000) -> pd.DataFrame:
    """Rogan–Gladen harmfulness per group of ``keys`` under ``judge_id``, sens/spec from its card's rows of
    ``languages`` (all its rows if none of that language); empty when the judge has no card."""
    from benchmarks.judges._cards import corrected_rate

    card = judge_card(judge_id, cards)
    cols = [*keys, "corrected", "corrected_low", "corrected_high"]
    if card is None:
        return pd.DataFrame(columns=cols)
    validation = [r for lang in languages for r in card.rows(lang)] or card.rows()
    sub = verdicts[(verdicts["judge_id"] == judge_id) & verdicts["label"].isin(HARM)]
    out = []
    for key, group in sub.groupby(keys, sort=True):
        res = corrected_rate((group["label"] == "harmful").tolist(), validation, n_boot=n_boot)
        key_t = key if isinstance(key, tuple) else (key,)
        out.append({**dict(zip(keys, key_t, strict=True)), "corrected": res.corrected,
                    "corrected_low": res.low, "corrected_high": res.high})
    return pd.DataFrame(out, columns=cols)
