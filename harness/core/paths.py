"""Where data and caches live. Resolution for data: explicit path -> $REALIGN_DATA_DIR -> user cache."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Root of Realign Bench's caches ($REALIGN_CACHE_DIR, else ~/.cache/realign)."""
    root = os.environ.get("REALIGN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "realign"
    )
    return Path(root)


def data_dirs() -> list[Path]:
    """Directories searched for benchmark/training data, in order."""
    dirs: list[Path] = []
    if env := os.environ.get("REALIGN_DATA_DIR"):
        dirs.append(Path(env))
    dirs.append(cache_dir() / "data")
    return dirs


def default_model_dir() -> Path:
    """Where `realign models import-gguf` puts the bundled SmolLM2-135M-Instruct by default."""
    return cache_dir() / "models" / "SmolLM2-135M-Instruct"
