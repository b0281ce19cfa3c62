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


def did_you_mean(name: str, choices: Iterable[str], *, n: int = 2, cutoff: float = 0.6) -> str:
    """``did you mean 'a' or 'b'?`` for the choices nearest ``name`` (empty when none is near): the one
    spelling hint of every "unknown name" error."""
    near = difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)
    return f"did you mean {' or '.join(repr(choice) for choice in near)}?" if near else ""


def name_unknown(unknown: Iterable[str], known: list[str], cutoff: float = 0.6) -> str:
    """``'a' (did you mean 'b'?), 'c'``: each unknown name with its nearest known ones, for an error message."""
    parts = []
    for key in unknown:
        hint = did_you_mean(key, known, cutoff=cutoff)
        parts.append(f"{key!r}" + (f" ({hint})" if hint else ""))
    return ", ".join(parts)
