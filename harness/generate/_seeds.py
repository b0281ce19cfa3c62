"""Per-prompt sampling seeds, so a prompt's samples do not depend on batching or on a resume."""

from __future__ import annotations

from harness.core.hashing import hash_value


def prompt_seed(seed: int, prompt: str) -> int:
    return int(hash_value([seed, prompt], length=8), 16) % (2**31 - 1)
