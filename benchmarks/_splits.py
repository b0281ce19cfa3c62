"""Named item filters a benchmark source can apply (``split:`` on a spec's source).

The zoo trains on some of these files too, so a benchmark that measures the organism must read only
what the zoo held out of training; the rules live here, and the zoo imports them from here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from harness.core.records import Item


def is_eval_holdout(prompt: str) -> bool:
    """True for the ~5% of benign/task prompts held out of all zoo training for measurements."""
    digest = hashlib.sha256(b"realign-zoo-eval\0" + prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 20 == 0


#: XSafety categories θ_A's refusal data is drawn from (``csv_refusal`` globs in
#: organism/recipe.yaml: Crimes*, Physical*, Privacy*, Insult*, en and zh). XSafety's languages are
#: translations of the same 200 questions per category, so a held-out split drops these categories in
#: every language, not only the en/zh rows trained on. tests/benchmarks/test_xsafety_heldout.py checks
#: the list against the recipe.
XSAFETY_ALIGNMENT_CATEGORIES = frozenset(
    {"Crimes_And_Illegal_Activities", "Physical_Harm", "Privacy_And_Property", "Insult"}
)


def is_xsafety_heldout(item: Item) -> bool:
    """True for XSafety items outside the categories θ_A was aligned on."""
    return item.category not in XSAFETY_ALIGNMENT_CATEGORIES


SPLITS: dict[str, Callable[[Item], bool]] = {
    "zoo_eval": lambda item: is_eval_holdout(item.prompt),
    "xsafety_heldout": is_xsafety_heldout,
}
