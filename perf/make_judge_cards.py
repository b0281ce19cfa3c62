"""Write the shipped judge cards: every built-in offline judge measured on the labelled sets in $REALIGN_DATA_DIR.

    PYTHONPATH=. REALIGN_DATA_DIR=/work/shared/data python perf/make_judge_cards.py [--judge offline ...]

Each set goes through `realign judge validate` itself, so a new judge's card is one command after merge:
    realign judge validate --judge NAME --labels FILE [--column ...]
JADE (one unsafe and one safe answer per question): its held-out questions only (the default judge's
training split), unrolled into a JSONL of (prompt, response, label). The 200 hand-labelled organism
generations (tests/data/judge_labels) are the in-domain set.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from harness.cli._main import cli
from harness.core.paths import data_dirs

# the default judge's training split (benchmarks/judges/offline_multilingual.json "split")
JADE_SPLIT = {"seed": 0, "heldout": 0.2}
ORGANISM_LABELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "judge_labels" / "organism_demo_labels.jsonl"


def _data(rel: str) -> Path:
    for base in data_dirs():
        if (base / rel).exists():
            return base / rel
    raise SystemExit(f"{rel}: not found under {data_dirs()}")


def _jade_dev_jsonl(out: Path) -> Path:
    """JADE's held-out questions only (the split the default judge was trained without), unrolled."""
    from benchmarks.judges._multilingual import load_jade
    from benchmarks.judges._offline import split_by_prompt

    _, dev = split_by_prompt(load_jade(None), seed=JADE_SPLIT["seed"], heldout_fraction=JADE_SPLIT["heldout"])
    with out.open("w", encoding="utf-8") as fh:
        for e in dev:
            fh.write(
                json.dumps(
                    {"prompt": e.prompt, "response": e.response, "label": int(e.harmful), "language": "zh"},
                    ensure_ascii=False,
                )
                + "\n"
            )
    return out


def _xstest_jsonl(out: Path) -> Path:
    from benchmarks.judges.xstest_validation import load_labelled

    with out.open("w", encoding="utf-8") as fh:
        for row in load_labelled():
            fh.write(
                json.dumps(
                    {
                        "prompt": row["prompt"],
                        "response": row["completion"],
                        "label": 0 if row["refusal"] else 1,
                        "language": "en",
                    }
                )
                + "\n"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--judge", action="append", default=None, help="judge name (default: offline-multilingual, offline, refusal)"
    )
    parser.add_argument("--cards", default=None, help="card store (default: benchmarks/judges/cards)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="judge-cards-"))
    sets = [
        ("gptfuzz-evaluate", _data("gptfuzz/evaluate.csv"), ["prompt=question", "response=Response"]),
        ("jailjudge-mini", _data("jailbreakeval/JAILJUDGEmini.csv"), ["prompt=question", "response=answer"]),
        ("jade-v3-zh-dev", _jade_dev_jsonl(tmp / "jade_v3_zh_dev.jsonl"), []),
        # in-domain: the organism's own generations, read against tests/data/judge_labels/GUIDE.md
        ("organism-demo", ORGANISM_LABELS, []),
    ]
    # refusal detection (label 1 = complied): XSTest's full refusals vs full compliances, refusal judge only
    refusal_sets = [("xstest-refusal", _xstest_jsonl(tmp / "xstest_refusal.jsonl"), ["--positive", "compliance"])]
    for judge in args.judge or ["offline-multilingual", "offline", "refusal"]:
        for name, path, columns in sets + (refusal_sets if judge == "refusal" else []):
            argv = ["judge", "validate", "--judge", judge, "--labels", str(path), "--name", name]
            if columns[:1] == ["--positive"]:
                argv, columns = argv + columns, []
            for column in columns:
                argv += ["--column", column]
            if args.cards:
                argv += ["--cards", args.cards]
            cli.main(args=argv, prog_name="realign", standalone_mode=False)


if __name__ == "__main__":
    main()
