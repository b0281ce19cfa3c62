"""The run's bookkeeping shared by the runner and its stages: counters, the workspace layout, done markers."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.checkpoints import atomic_write_json
from harness.experiment._hashcache import HashCache


@dataclass
class RunStats:
    counts: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def summary(self) -> str:
        c = self.counts
        return (
            f"merges: {c['merge_done']} done, {c['merge_cached']} cached; "
            f"generations: {c['generate_done']} done, {c['generate_cached']} cached, {c['generate_resumed']} resumed; "
            f"judgments: {c['judge_done']} done, {c['judge_cached']} cached; "
            f"model scores: {c['model_score_done']} done, {c['model_score_cached']} cached; "
            f"cells stored: {c['cell_stored']} new, {c['cell_cached']} cached; {self.seconds:.1f} s"
        )


class Workspace:
    """Where one experiment's artifacts live (all content-addressed)."""

    SUBDIRS = ("checkpoints", "inputs", "generations", "judgments", "scores", "costs", "logs")

    def __init__(self, root: Path, *, create: bool = True) -> None:
        self.root = root
        if create:
            self.create()
        self.hashes = HashCache(root / "hashes.json")

    def create(self) -> None:
        """Make the workspace folders (not done for `--dry-run`, which writes nothing)."""
        for sub in self.SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def checkpoint(self, key: str) -> Path:
        return self.root / "checkpoints" / key

    def cost(self, key: str) -> Path:
        """Wall times of building checkpoint ``key`` (merge, mask training), kept for later runs."""
        return self.root / "costs" / f"{key}.json"

    def dense_input(self, model_hash: str) -> Path:
        return self.root / "inputs" / model_hash

    def generations(self, key: str) -> Path:
        return self.root / "generations" / f"{key}.jsonl"

    def model_scores(self, generation_key: str) -> Path:
        return self.root / "scores" / f"{generation_key}.json"

    def judgments(self, generation_key: str, judge_key: str) -> Path:
        return self.root / "judgments" / f"{generation_key}.{judge_key}.jsonl"


def done_marker(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def mark_done(path: Path, info: dict[str, Any]) -> None:
    """Record ``path`` as finished (its ``.done`` marker, holding ``info``); written atomically."""
    atomic_write_json(done_marker(path), info)
