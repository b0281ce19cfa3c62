"""Named row filters a benchmark source can apply (``split:`` on a spec's source).

The zoo trains on these files too, so a benchmark that measures its utility must read only the rows
the zoo held out of training; the rule lives here, and the zoo imports it from here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable


def is_eval_holdout(prompt: str) -> bool:
    """True for the ~5% of benign/task prompts held out of all zoo training for measurements."""
    digest = hashlib.sha256(b"realign-zoo-eval\0" + prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 20 == 0


SPLITS: dict[str, Callable[[str], bool]] = {"zoo_eval": is_eval_holdout}
