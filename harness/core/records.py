"""The records that cross stage boundaries (each arrow of the data path is a file of these).

benchmark items -> generations.jsonl (GenerationRecord) -> judgments.jsonl (Verdict) -> Score rows.
Every record is a frozen pydantic model; files are JSON Lines, one record per line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.core.checkpoints._atomic import atomic_write_text
from harness.core.errors import DataError

SCHEMA_VERSION = 1
log = logging.getLogger("realign.records")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Item(_Record):
    """One benchmark item. ``id`` is stable across runs (benchmark, language and source row)."""

    id: str
    benchmark: str
    prompt: str  # the user turn, before any chat template
    system_prompt: str | None = None
    language: str | None = None
    category: str | None = None
    subcategory: str | None = None
    reference: str | None = None  # gold answer, test code, or reference completion
    metadata: dict[str, Any] = Field(default_factory=dict)


class GenerationRecord(_Record):
    """One sampled completion for one item from one model checkpoint."""

    item_id: str
    benchmark: str
    sample_index: int = 0
    prompt_text: str  # the exact text fed to the model (chat template applied)
    prompt_hash: str
    completion: str
    model_hash: str
    gen_config_hash: str
    backend: str
    finish_reason: str | None = None
    num_tokens: int | None = None
    language: str | None = None
    category: str | None = None


Label = Literal["harmful", "harmless", "refusal", "compliance", "win", "loss", "draw", "invalid"]


class Verdict(_Record):
    """A judge's decision on one generation (or, for pairwise judges, one pair)."""

    item_id: str
    sample_index: int = 0
    judge_id: str  # stable name + version, e.g. "refusal/gcg@2"
    judge_hash: str  # hash of the judge's prompt / keyword list / weights
    label: Label
    score: float | None = None  # e.g. probability of "unsafe"
    rationale: str | None = None
    generation_hash: str | None = None  # hash of the judged completion text


class Score(_Record):
    """An aggregate metric over a set of items."""

    benchmark: str
    metric: str  # "harmfulness", "refusal_rate", "pairwise", "gsm8k_strict", "pass@1", "nll" ...
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    n: int
    subset: dict[str, str] = Field(default_factory=dict)  # e.g. {"language": "zh"}
    higher_is_better: bool = True


class ItemScore(_Record):
    """A per-item outcome of a utility scorer (1.0 pass / 0.0 fail, or any number, e.g. an item's NLL),
    kept so that two runs can be compared item by item. ``metric`` names the aggregate :class:`Score`
    it feeds, whose ``higher_is_better`` gives its direction."""

    item_id: str
    metric: str
    value: float
    sample_index: int = 0


R = TypeVar("R", bound=BaseModel)


def read_jsonl(path: str | Path, record_type: type[R]) -> list[R]:
    """Read a JSONL file of ``record_type``; a bad line raises DataError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    records: list[R] = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(record_type.model_validate_json(line))
            except ValidationError as exc:
                raise DataError(f"{path}:{lineno}: not a valid {record_type.__name__}: {exc}") from exc
    return records


def iter_jsonl_tolerant(path: str | Path, record_type: type[R]) -> Iterator[R]:
    """Like read_jsonl but drops a truncated *last* line (a run killed mid-write), for resuming."""
    path = Path(path)
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield record_type.model_validate_json(line)
        except ValidationError:
            if index == len(lines) - 1 and not line.endswith("\n"):
                return
            raise DataError(f"{path}:{index + 1}: not a valid {record_type.__name__}") from None


def dedupe_by_key(
    records: Iterable[R], key: Callable[[R], Hashable], *, source: str = "", allowed: set[str] | None = None
) -> list[R]:
    """The first record per ``key`` (e.g. (item_id, sample_index)), in file order.

    Results files are appended to; two writers (or a resumed writer) can leave a key twice. Reading
    through this keeps every count at one per key, so n can never exceed the number of items.
    ``allowed``: item ids that belong here; a record for another item is dropped too.
    """
    seen: set[Hashable] = set()
    out: list[R] = []
    dropped = foreign = 0
    for record in records:
        if allowed is not None and getattr(record, "item_id", None) not in allowed:
            foreign += 1
            continue
        k = key(record)
        if k in seen:
            dropped += 1
            continue
        seen.add(k)
        out.append(record)
    if dropped or foreign:
        log.warning("%s: ignored %d duplicated and %d foreign records", source or "results", dropped, foreign)
    return out


def write_jsonl(path: str | Path, records: Iterable[BaseModel]) -> None:
    """Write a whole JSONL file atomically (temp file, then rename): readers never see half of it."""
    atomic_write_text(Path(path), "".join(r.model_dump_json() + "\n" for r in records))


def append_jsonl(path: str | Path, records: Iterable[BaseModel]) -> None:
    """Append records, one flushed line each (so a kill loses at most the line being written)."""
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(record.model_dump_json() + "\n")
            handle.flush()
