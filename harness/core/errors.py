"""Error types shared by every package. Each message names the file, field or tensor at fault."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class RealignError(Exception):
    """Base class: a user-facing error whose message is printed as-is by the CLI."""


class ConfigError(RealignError, ValueError):
    """A config field, method parameter or CLI option is missing, unknown or out of range."""


class CheckpointError(RealignError):
    """A checkpoint, adapter or tensor is missing, unreadable or incompatible with the others."""


class DataError(RealignError):
    """A data file is missing or one of its rows/columns is malformed."""


class StoreError(RealignError):
    """The results store is corrupted, locked or of an unsupported schema version."""


def name_unknown(unknown: Iterable[str], known: list[str], cutoff: float = 0.6) -> str:
    """``'a' (did you mean 'b'?), 'c'``: each unknown name with its nearest known ones, for an error message."""
    parts = []
    for key in unknown:
        near = difflib.get_close_matches(key, known, n=2, cutoff=cutoff)
        parts.append(f"{key!r}" + (f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""))
    return ", ".join(parts)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the nearest of ``choices`` to ``name``, or ``""`` when none is near."""
    near = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {near[0]!r}?)" if near else ""
