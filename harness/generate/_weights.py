"""The weight check every backend runs before loading a model or adapter."""

from __future__ import annotations

from pathlib import Path

from harness.core.checkpoints import check_checkpoint_finite


def check_model_weights(
    model_dir: str | Path | None, adapter: str | Path | None = None, *, allow_pickle: bool = False
) -> None:
    """Refuse, before any backend loads it, a model (or adapter) that is not one, is pickle (unless
    ``allow_pickle``), or holds NaN/±inf weights. Reads every tensor once (memory-mapped)."""
    hint = "refusing to generate from it (a model with non-finite weights emits garbage)"
    if model_dir is not None:
        check_checkpoint_finite(model_dir, allow_pickle=allow_pickle, hint=hint, adapter=False)
    if adapter is not None:
        check_checkpoint_finite(adapter, allow_pickle=allow_pickle, hint=hint, adapter=True)
