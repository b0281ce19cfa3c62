"""The scorer registry: each scorer registers itself by name (``@scorer("gsm8k")``), a benchmark
spec names one (``default_scorer``), and an unknown name is refused when the spec is read."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from harness.core.errors import ConfigError, name_unknown
from harness.core.records import GenerationRecord, Item, ItemScore, Score, Verdict
from harness.core.registry import Registry

if TYPE_CHECKING:  # type-only: benchmark specs import this registry to check their scorer's name
    from benchmarks._benchmark import Benchmark

#: what a scorer reads: saved generations (and the judge's verdicts), or the model itself
Reads = Literal["generations", "model"]
Scored = tuple[list[Score], list[ItemScore]]


@dataclass(frozen=True)
class ScoreOptions:
    """Settings a generation scorer may use (pass@k's code execution and its k values)."""

    allow_code_execution: bool = False
    ks: Sequence[int] = (1,)
    sandbox_options: Mapping[str, Any] = field(default_factory=dict)


#: (benchmark, generations, verdicts or None, items by id, options) -> (scores, per-item scores)
GenerationScoreFn = Callable[
    ["Benchmark", Sequence[GenerationRecord], "Sequence[Verdict] | None", Mapping[str, Item], ScoreOptions], Scored
]
#: (benchmark, model dir or (model, tokenizer), items) -> (scores, per-item scores)
ModelScoreFn = Callable[["Benchmark", Any, Sequence[Item]], Scored]


@dataclass(frozen=True)
class Scorer:
    """A registered scorer: its name, what it reads, and the function."""

    name: str
    reads: Reads
    fn: Callable[..., Scored]
    #: a generation scorer computed from judge verdicts (they must be given)
    needs_verdicts: bool = False


def _check(name: str, item: object) -> Scorer:
    if not isinstance(item, Scorer):
        raise ConfigError(f"scorer {name!r}: expected a Scorer (register it with @scorer), got {type(item).__name__}")
    return item


def _load_builtin_scorers() -> None:
    importlib.import_module("benchmarks.scoring._scores")  # its @scorer decorators register the built-ins


SCORERS: Registry[Scorer] = Registry("scorer", "realign.scorers", check=_check, builtins=_load_builtin_scorers)


def scorer(
    name: str, *, reads: Reads = "generations", needs_verdicts: bool = False
) -> Callable[[Callable[..., Scored]], Callable[..., Scored]]:
    """Register the decorated function as scorer ``name`` (the function itself is returned unchanged).

    A ``reads="generations"`` scorer has the :data:`GenerationScoreFn` signature, a ``reads="model"``
    one :data:`ModelScoreFn`."""

    def decorator(fn: Callable[..., Scored]) -> Callable[..., Scored]:
        SCORERS.add(name, Scorer(name, reads, fn, needs_verdicts), source=f"{fn.__module__}.{fn.__qualname__}")
        return fn

    return decorator


def get_scorer(name: str) -> Scorer:
    """The scorer registered as ``name``; an unknown name is a ConfigError with the near name."""
    known = SCORERS.names()
    if name not in known:
        raise ConfigError(f"unknown scorer {name_unknown([name], list(known), cutoff=0.5)}; known: {', '.join(known)}")
    return SCORERS.get(name)


def scorer_names(reads: Reads | None = None) -> frozenset[str]:
    """Names of the registered scorers (those that read ``reads``, when given)."""
    return frozenset(n for n in SCORERS.names() if reads is None or SCORERS.get(n).reads == reads)
