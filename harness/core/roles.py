"""Reference rows: the unrealigned models a leaderboard measures realignment methods against.

The planner evaluates them as-is (no merge) and the store records the role with each cell, so the
leaderboard finds its reference rows by role, never by a method's name.
"""

from __future__ import annotations

from enum import StrEnum


class ReferenceRole(StrEnum):
    """Which unchanged model a reference row evaluates; declaration order is the leaderboard's row order."""

    ORIGINAL = "original"  # the model before safety alignment (one row shared by every fine-tune)
    ALIGNED = "aligned"  # the safety-aligned model: H_aligned, the safety a method can recover to
    FINETUNED = "finetuned"  # the fine-tune unchanged: H_ft and U_ft, what a method starts from


#: row order of reference rows (realignment methods follow)
REFERENCE_ORDER: tuple[ReferenceRole, ...] = tuple(ReferenceRole)
