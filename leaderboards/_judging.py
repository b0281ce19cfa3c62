"""What the leaderboard knows about its judges: declared languages, agreement, error-corrected harmfulness.

Declared languages and sensitivity/specificity come from the judge's card (benchmarks.judges card store,
``$REALIGN_JUDGE_CARDS`` else ``benchmarks/judges/cards``), looked up by judge id and content hash: a card
measured on other options (say the refusal judge with other marker languages) is not this judge's card.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.judges._cards import cohen_kappa, corrected_rate, find_card, load_card

HARM = ("harmful", "harmless")


def judge_card(judge_id: str, cards: Path | None = None, judge_hash: str | None = None) -> Any:
    """The card of exactly this judge (id + hash) when the hash is known, else the newest card of the id."""
    return load_card(judge_id, judge_hash, cards) if judge_hash else find_card(judge_id, cards)


def judge_hashes(verdicts: pd.DataFrame) -> dict[str, str | None]:
    """The content hash each judge id gave its verdicts (None when a run mixes several for one id)."""
    if "judge_hash" not in verdicts.columns or verdicts.empty:
        return {}
    return {
        str(j): (str(h.iloc[0]) if h.nunique() == 1 else None) for j, h in verdicts.groupby("judge_id")["judge_hash"]
    }


def declared_languages(judge_id: str, cards: Path | None = None, judge_hash: str | None = None) -> set[str] | None:
    """Languages the judge's card declares; None when it has no card (then nothing is masked, a note says so)."""
    card = judge_card(judge_id, cards, judge_hash)
    return set(card.languages) if card is not None else None


def agreement_table(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Raw agreement and Cohen's κ for every pair of harm judges on the same generations, per benchmark."""
    rows: list[dict[str, Any]] = []
    harm = verdicts[verdicts["label"].isin(HARM)]
    for bench, group in harm.groupby("benchmark", sort=True):
        wide = group.assign(harmful=group["label"] == "harmful").pivot_table(
            index=["cell_id", "item_id", "sample_index"], columns="judge_id", values="harmful", aggfunc="first"
        )
        for a, b in itertools.combinations(sorted(wide.columns), 2):
            both = wide[[a, b]].dropna()
            if both.empty:
                continue
            x, y = both[a].astype(bool).tolist(), both[b].astype(bool).tolist()
            rows.append(
                {
                    "benchmark": bench,
                    "judge_a": a,
                    "judge_b": b,
                    "n": len(x),
                    "agreement": sum(p == q for p, q in zip(x, y, strict=True)) / len(x),
                    "kappa": cohen_kappa(x, y),
                }
            )
    return pd.DataFrame(rows, columns=["benchmark", "judge_a", "judge_b", "n", "agreement", "kappa"])


def corrected_cells(
    verdicts: pd.DataFrame,
    judge_id: str,
    keys: list[str],
    languages: list[str],
    cards: Path | None = None,
    n_boot: int = 1000,
    judge_hash: str | None = None,
) -> pd.DataFrame:
    """Rogan–Gladen harmfulness per group of ``keys`` under ``judge_id``, sens/spec from its card's rows of
    ``languages`` (all its rows if none of that language); empty when the judge has no card."""
    card = judge_card(judge_id, cards, judge_hash)
    cols = [*keys, "corrected", "corrected_low", "corrected_high"]
    if card is None:
        return pd.DataFrame(columns=cols)
    validation = [r for lang in languages for r in card.rows(lang)] or card.rows()
    sub = verdicts[(verdicts["judge_id"] == judge_id) & verdicts["label"].isin(HARM)]
    out = []
    for key, group in sub.groupby(keys, sort=True):
        res = corrected_rate((group["label"] == "harmful").tolist(), validation, n_boot=n_boot)
        key_t = key if isinstance(key, tuple) else (key,)
        out.append(
            {
                **dict(zip(keys, key_t, strict=True)),
                "corrected": res.corrected,
                "corrected_low": res.low,
                "corrected_high": res.high,
            }
        )
    return pd.DataFrame(out, columns=cols)
