"""Write-to-temp-then-rename for output directories, so a failed write never leaves a half output."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def make_temp_dir(out_dir: Path) -> Path:
    """A fresh ``.<name>.tmp-<pid>-<random>`` next to ``out_dir`` (same filesystem, so rename is atomic)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-{os.getpid()}-", dir=out_dir.parent))


def move_into_place(tmp_dir: Path, out_dir: Path) -> None:
    """Rename ``tmp_dir`` to ``out_dir``; an existing ``out_dir`` is replaced (moved aside, then deleted)."""
    if not out_dir.exists():
        tmp_dir.rename(out_dir)
        return
    # Move the old output aside first, so a failure leaves the old one rather than nothing.
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-{os.getpid()}-", dir=out_dir.parent))
    trash.rmdir()
    out_dir.rename(trash)
    try:
        tmp_dir.rename(out_dir)
    except BaseException:
        trash.rename(out_dir)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """``atomic_write_bytes`` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any, *, indent: int | None = None) -> None:
    """``value`` as JSON with sorted keys (stable bytes for the same value), written atomically."""
    atomic_write_text(path, json.dumps(value, sort_keys=True, indent=indent))
