"""Write the shipped judge cards: every built-in offline judge measured on the labelled sets in $REALIGN_DATA_DIR.

    PYTHONPATH=. REALIGN_DATA_DIR=/work/shared/data python perf/make_judge_cards.py [--judge offline ...]

Each set goes through `realign judge validate` itself, so a new judge's card is one command after merge:
    realign judge validate --judge NAME --labels FILE [--column ...]
JADE (one unsafe and one safe answer per question) is first unrolled into a JSONL of (prompt, response, label).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

from harness.cli._main import cli
from harness.paths import data_dirs


def _data(rel: str) -> Path:
    for base in data_dirs():
        if (base / rel).exists():
            return base / rel
    raise SystemExit(f"{rel}: not found under {data_dirs()}")


def _jade_jsonl(out: Path) -> Path:
    with out.open("w", encoding="utf-8") as fh:
        for name in ("jade_alignment_medium_zh.csv", "jade_alignment_hard_zh.csv"):
            text = _data(f"jade_v3_zh/{name}").read_bytes().decode("gb18030")
            for row in csv.DictReader(text.splitlines(keepends=True)):
                for column, label in (("违规回答", 1), ("安全有用回答", 0)):
                    fh.write(json.dumps({"prompt": row["问题"], "response": row[column], "label": label,
                                         "language": "zh"}, ensure_ascii=False) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--judge", action="append", default=None, help="judge name (default: offline, refusal)")
    parser.add_argument("--cards", default=None, help="card store (default: benchmarks/judges/cards)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="judge-cards-"))
    sets = [
        ("gptfuzz-evaluate", _data("gptfuzz/evaluate.csv"), ["prompt=question", "response=Response"]),
        ("jailjudge-mini", _data("jailbreakeval/JAILJUDGEmini.csv"), ["prompt=question", "response=answer"]),
        ("jade-v3-zh", _jade_jsonl(tmp / "jade_v3_zh.jsonl"), []),
    ]
    for judge in args.judge or ["offline", "refusal"]:
        for name, path, columns in sets:
            argv = ["judge", "validate", "--judge", judge, "--labels", str(path), "--name", name]
            for column in columns:
                argv += ["--column", column]
            if args.cards:
                argv += ["--cards", args.cards]
            cli.main(args=argv, prog_name="realign", standalone_mode=False)


if __name__ == "__main__":
    main()
