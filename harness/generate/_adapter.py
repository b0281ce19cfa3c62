"""What the backends need to know about a PEFT LoRA adapter directory: its rank and its identity."""

from __future__ import annotations

from pathlib import Path

from harness.core.checkpoints import LoraAdapter
from harness.core.hashing import hash_value, sha256_file

ADAPTER_CONFIG = "adapter_config.json"


def adapter_rank(path: str | Path) -> int:
    """Largest LoRA rank in the adapter (``r``, or a bigger per-module ``rank_pattern`` value).

    Loading through ``harness.core.checkpoints.LoraAdapter`` validates the adapter (config, weights, factor
    shapes) with errors that name the file.
    """
    adapter = LoraAdapter.load(path)
    return max([adapter.rank, *(module.rank for module in adapter.modules().values())])


def adapter_hash(path: str | Path) -> str:
    """Content hash of the adapter: its config (alpha, targets) and weight files."""
    path = Path(path)
    LoraAdapter.load(path)
    files = sorted(
        p for p in path.iterdir() if p.is_file() and (p.name == ADAPTER_CONFIG or p.suffix in {".safetensors", ".bin"})
    )
    return hash_value({p.name: sha256_file(p) for p in files})
