"""The hand-labelled organism generations (tests/data/judge_labels): schema, and the judges measured on them.

The labels were assigned by reading each response against ``tests/data/judge_labels/GUIDE.md``
(HarmBench's definition of a harmful completion); see that folder's README. This file checks the
label file and prints the refusal judge's and the default judge's agreement with the labels per language (run
with ``-s`` to see it). Only invariants are asserted, never a measured accuracy.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.judges import DEFAULT_JUDGE, get_judge
from harness.core.records import GenerationRecord, Item

LABELS_DIR = Path(__file__).resolve().parents[1] / "data" / "judge_labels"
LABELS_FILE = LABELS_DIR / "organism_demo_labels.jsonl"
FIELDS = {"id", "language", "benchmark", "model", "prompt", "response", "label", "note"}
JUDGES = ("refusal", DEFAULT_JUDGE)  # refusal = refusal/gcg@2 (GCG keywords + Chinese markers)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return [json.loads(line) for line in LABELS_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_label_file_schema(rows: list[dict]) -> None:
    assert len(rows) == 200
    assert all(set(r) == FIELDS for r in rows), "every row has exactly the documented fields"
    assert len({r["id"] for r in rows}) == 200
    assert Counter(r["language"] for r in rows) == {"en": 100, "zh": 100}
    assert all(r["label"] in (0, 1) and isinstance(r["label"], int) for r in rows)
    assert all(isinstance(r[k], str) and r[k].strip() for r in rows for k in ("prompt", "model", "benchmark"))
    assert all(isinstance(r["response"], str) and isinstance(r["note"], str) for r in rows)
    by_language = {lang: {r["label"] for r in rows if r["language"] == lang} for lang in ("en", "zh")}
    assert by_language["en"] == {0, 1}, "both classes in en"
    # Chinese: no response of the organism met the guide's bar for harmful (it echoes the prompt or
    # degenerates at 64-96 tokens), so zh holds harmless rows only; see the README. Should harmful zh rows
    # be added, both classes must then be labelled consistently: never only harmful.
    assert 0 in by_language["zh"]
    assert (LABELS_DIR / "GUIDE.md").is_file() and (LABELS_DIR / "README.md").is_file()


def _records(rows: list[dict]) -> tuple[list[GenerationRecord], dict[str, Item]]:
    gens, items = [], {}
    for r in rows:
        items[r["id"]] = Item(id=r["id"], benchmark=r["benchmark"], prompt=r["prompt"], language=r["language"])
        gens.append(
            GenerationRecord(
                item_id=r["id"],
                benchmark=r["benchmark"],
                prompt_text=r["prompt"],
                prompt_hash="-",
                completion=r["response"],
                model_hash=r["model"],
                gen_config_hash="-",
                backend="hf",
                language=r["language"],
            )
        )
    return gens, items


@pytest.mark.parametrize("name", JUDGES)
def test_judges_measured_on_the_labels(rows: list[dict], name: str) -> None:
    judge = get_judge(name)
    gens, items = _records(rows)
    verdicts = judge.judge(gens, items)
    assert len(verdicts) == len(rows)
    assert [v.item_id for v in verdicts] == [r["id"] for r in rows]
    assert all(v.label in ("harmful", "harmless", "invalid") for v in verdicts)
    lines = [f"judge {judge.id} vs organism_demo_labels.jsonl:"]
    for language in ("en", "zh"):
        pairs = [
            (r["label"], v.label == "harmful")
            for r, v in zip(rows, verdicts, strict=True)
            if r["language"] == language and v.label != "invalid"
        ]
        tp = sum(1 for y, p in pairs if y == 1 and p)
        tn = sum(1 for y, p in pairs if y == 0 and not p)
        fp = sum(1 for y, p in pairs if y == 0 and p)
        fn = sum(1 for y, p in pairs if y == 1 and not p)
        n = len(pairs)
        assert n > 0 and tp + tn + fp + fn == n
        accuracy = (tp + tn) / n
        assert 0.0 <= accuracy <= 1.0
        lines.append(f"  {language}: n={n} accuracy={accuracy:.3f} tp={tp} fp={fp} tn={tn} fn={fn}")
    print("\n".join(lines))
    # Invariant that holds by construction of the refusal judge: a response it calls harmless contains
    # a refusal marker, and every labelled refusal row is harmless to us too, so it must not be all-harmful
    # on a set where a refusing model (θ_A) answered.
    assert any(v.label == "harmless" for v in verdicts)
