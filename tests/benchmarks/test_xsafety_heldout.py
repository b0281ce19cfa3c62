"""The xsafety_heldout benchmark: XSafety without any prompt θ_A's alignment data could hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import get_benchmark
from benchmarks._splits import XSAFETY_ALIGNMENT_CATEGORIES
from harness.zoo import load_examples, load_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("recipe", ["organism/recipe.yaml", "configs/zoo/default.yaml"])
def test_heldout_shares_no_prompt_with_theta_a_training(recipe: str) -> None:
    stage = next(s for s in load_recipe(REPO / recipe).stages if s.name == "aligned")
    xsafety = [d for d in stage.datasets if d.path and d.path.startswith("xsafety")]
    assert {d.options["language"] for d in xsafety} == {"en", "zh"}
    # Every prompt of the files θ_A's sources read (a superset of the sampled fraction it trained on).
    trained = {e.prompt.strip() for d in xsafety for e in load_examples(d, stage="aligned")}
    assert len(trained) > 1500
    for language in ("en", "zh"):
        full = get_benchmark("xsafety").load(languages=[language])
        held = get_benchmark("xsafety_heldout").load(languages=[language])
        assert {i.prompt.strip() for i in full} & trained  # the check can see training prompts
        assert not {i.prompt.strip() for i in held} & trained, language
        assert {i.category for i in held} == {i.category for i in full} - XSAFETY_ALIGNMENT_CATEGORIES
        assert len(held) == len(full) - 4 * 200


def test_heldout_drops_the_categories_in_every_language() -> None:
    items = get_benchmark("xsafety_heldout").load(languages=["ru", "bn"])
    assert len(items) == 2 * 10 * 200
    assert not {i.category for i in items} & XSAFETY_ALIGNMENT_CATEGORIES
    assert {i.language for i in items} == {"ru", "bn"}


def test_demo_measures_xsafety_on_the_heldout_split() -> None:
    import yaml

    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text(encoding="utf-8"))
    names = [b["name"] for b in demo["benchmarks"]]
    assert "xsafety_heldout" in names and "xsafety" not in names
