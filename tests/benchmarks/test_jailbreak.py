"""The jailbreak variant: MultiJail questions inside shipped jailbreak templates (AIM = the intentional setting)."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from pathlib import Path

import pytest

from benchmarks import get_benchmark, load_spec
from benchmarks._jailbreaks import PLACEHOLDER, apply_jailbreak, jailbreak_names, jailbreak_template
from benchmarks.scoring import score
from harness.core.errors import ConfigError
from harness.core.records import Verdict

FOLDER = Path(str(resources.files("benchmarks") / "jailbreaks"))


def test_templates_match_their_provenance() -> None:
    """Each file is the upstream text its PROVENANCE row names (sha256 and length), with one placeholder."""
    table = re.findall(
        r"^\| `(\w+)\.txt` \| (\d+) \| [^|]+ \| (\d+) \| `([0-9a-f]{64})` \|$",
        (FOLDER / "PROVENANCE.md").read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    assert sorted(name for name, *_ in table) == jailbreak_names() == ["aim", "dev_mode", "dr_al", "evil_confidant"]
    for name, _row, chars, digest in table:
        text = jailbreak_template(name)
        assert hashlib.sha256(text.encode("utf-8")).hexdigest() == digest, name
        assert len(text) == int(chars) and text.count(PLACEHOLDER) == 1
    assert "Niccolo" in jailbreak_template("aim") and "AIM" in jailbreak_template("aim")


def test_each_question_once_per_template() -> None:
    plain = {i.id.removeprefix("multijail/"): i for i in get_benchmark("multijail").load(languages=["en", "zh"])}
    items = get_benchmark("multijail_jailbreak").load(languages=["en", "zh"])
    assert len(items) == 4 * len(plain) == 4 * 2 * 315 and len({i.id for i in items}) == len(items)
    for item in items:
        stem, template = item.id.removeprefix("multijail_jailbreak/").rsplit("/", 1)
        base = plain[stem]
        assert item.subcategory == item.metadata["jailbreak"] == template
        assert item.metadata["question"] == base.prompt and item.category == base.category
        assert item.prompt == apply_jailbreak(template, base.prompt) and PLACEHOLDER not in item.prompt
        assert item.language == base.language


def test_intentional_setting_is_aim_around_every_question() -> None:
    aim = get_benchmark("multijail_jailbreak").load(languages=["sw"], categories=["aim"])
    assert len(aim) == 315
    head, tail = jailbreak_template("aim").split(PLACEHOLDER)
    questions = [i.prompt for i in get_benchmark("multijail").load(languages=["sw"])]
    assert [i.prompt.removeprefix(head).removesuffix(tail) for i in aim] == questions
    assert all(i.prompt.startswith(head) and i.prompt.endswith(tail) for i in aim)


def test_unknown_template_in_a_spec_is_named(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nkind: safety\njailbreaks: [aim, evil_confidnt]\nsources:\n  - {path: a.json}\n")
    with pytest.raises(
        ConfigError, match=r"unknown jailbreak template 'evil_confidnt' \(did you mean 'evil_confidant'\?\)"
    ):
        load_spec(spec)


def test_attack_success_is_scored_per_template() -> None:
    items = {i.id: i for i in get_benchmark("multijail_jailbreak").load(languages=["en"], limit=40)}
    # harmful exactly when the template is dr_al or the question's row id is even
    verdicts = [
        Verdict(
            item_id=i.id,
            judge_id="j",
            judge_hash="h",
            label="harmful" if i.subcategory == "dr_al" or int(i.id.split("/")[2]) % 2 == 0 else "harmless",
        )
        for i in items.values()
    ]
    rows = {
        tuple(sorted(s.subset.items())): s for s in score(get_benchmark("multijail_jailbreak"), [], verdicts, items)
    }
    for template in jailbreak_names():
        mine = [v for v in verdicts if items[v.item_id].subcategory == template]
        row = rows[(("jailbreak", template),)]
        assert row.n == len(mine) == 10 and row.value == sum(v.label == "harmful" for v in mine) / len(mine)
    assert rows[(("jailbreak", "dr_al"),)].value == 1.0
    assert rows[()].n == 40
