"""The refusal judge validated on XSTest's human-labelled completions (refusal vs compliance).

    PYTHONPATH=. REALIGN_DATA_DIR=../shared/data python -m benchmarks.judges.xstest_validation [--out FILE]

Data: ``xstest/xstest_v2_completions_*.csv`` (5 models × 450 prompts; see its PROVENANCE.md). The
gold label is the adjudicated ``final_label``: ``2_full_refusal`` is a refusal, ``1_full_compliance``
a compliance, and ``3_partial_refusal`` rows are dropped (neither class). The positive class is
*refusal*. The figures (accuracy, precision and recall of "refusal", n, per completion model) are
what the judge-card system shows as this judge's XSTest validation; ``--out`` writes them as JSON
(atomically).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any

from benchmarks.judges._base import get_judge
from harness.core.errors import DataError
from harness.core.paths import data_dirs

COMPLETION_FILES = ("gpt4", "llama2new", "llama2orig", "mistralguard", "mistralinstruct")
GOLD = {"2_full_refusal": True, "1_full_compliance": False}
DROPPED = "3_partial_refusal"
REQUIRED = ("prompt", "completion", "final_label", "type")


def xstest_dir(data_dir: str | Path | None = None) -> Path:
    """The folder holding XSTest's completion files (``data_dir``/xstest, else the data dirs)."""
    candidates = [Path(data_dir)] if data_dir is not None else data_dirs()
    for base in candidates:
        folder = base / "xstest" if (base / "xstest").is_dir() else base
        if (folder / f"xstest_v2_completions_{COMPLETION_FILES[0]}.csv").is_file():
            return folder
    raise DataError(
        f"XSTest completions not found under {', '.join(map(str, candidates))} "
        "(expected xstest/xstest_v2_completions_*.csv; set REALIGN_DATA_DIR)"
    )


def load_labelled(data_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Rows {model, type, prompt, completion, refusal: bool} with partial refusals dropped."""
    folder = xstest_dir(data_dir)
    rows: list[dict[str, Any]] = []
    for model in COMPLETION_FILES:
        path = folder / f"xstest_v2_completions_{model}.csv"
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
            for number, row in enumerate(reader, start=2):
                label = row["final_label"].strip()
                if label == DROPPED:
                    continue
                if label not in GOLD:
                    raise DataError(f"{path}: row {number}: column 'final_label': unknown label {label!r}")
                rows.append(
                    {
                        "model": model,
                        "type": row["type"],
                        "prompt": row["prompt"],
                        "completion": row["completion"],
                        "refusal": GOLD[label],
                    }
                )
    if not rows:
        raise DataError(f"{folder}: no labelled XSTest completions")
    return rows


def _figures(gold: list[bool], predicted: list[bool]) -> dict[str, Any]:
    tp = sum(g and p for g, p in zip(gold, predicted, strict=True))
    fp = sum(p and not g for g, p in zip(gold, predicted, strict=True))
    fn = sum(g and not p for g, p in zip(gold, predicted, strict=True))
    tn = len(gold) - tp - fp - fn
    n = len(gold)
    return {
        "n": n,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "accuracy": (tp + tn) / n if n else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
    }


def validate_refusal_judge(data_dir: str | Path | None = None, judge: Any = None) -> dict[str, Any]:
    """Accuracy, precision/recall of "refusal" and n of ``judge`` (default ``refusal``) on XSTest."""
    if judge is None:
        judge = get_judge("refusal")
    rows = load_labelled(data_dir)
    predicted = [bool(judge.is_refusal(r["completion"])) for r in rows]
    gold = [bool(r["refusal"]) for r in rows]
    out: dict[str, Any] = {
        "judge_id": judge.id,
        "judge_hash": judge.hash,
        "labelled_set": "xstest_v2_completions",
        "positive": "refusal",
        "dropped": DROPPED,
        **_figures(gold, predicted),
        "per_model": {},
    }
    for model in COMPLETION_FILES:
        picked = [i for i, r in enumerate(rows) if r["model"] == model]
        out["per_model"][model] = _figures([gold[i] for i in picked], [predicted[i] for i in picked])
    return out


def write_json(figures: dict[str, Any], path: Path) -> None:
    """``figures`` as JSON at ``path``: written to a temporary file, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="data dir (default: REALIGN_DATA_DIR / the cache)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    figures = validate_refusal_judge(args.data)
    print(f"{figures['judge_id']} on XSTest labelled completions (full refusal vs full compliance; partial dropped)")
    print(
        f"  n={figures['n']}  accuracy={figures['accuracy']:.3f}  precision(refusal)={figures['precision']:.3f}  "
        f"recall(refusal)={figures['recall']:.3f}"
    )
    for model, f in figures["per_model"].items():
        print(
            f"  {model:16s} n={f['n']:3d}  accuracy={f['accuracy']:.3f}  precision={f['precision']:.3f}  "
            f"recall={f['recall']:.3f}"
        )
    if args.out is not None:
        write_json(figures, args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
