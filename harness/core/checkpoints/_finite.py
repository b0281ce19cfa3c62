"""Non-finite weights (NaN, ±inf): found per tensor and refused with the tensor named.

A NaN in any input survives every merge and yields a model that emits garbage, which a refusal
judge then scores as 100% harmful with exit 0. So merges check what they read and what they
write, and generation checks the model it is about to load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from harness.core.errors import CheckpointError


class NonFiniteError(CheckpointError):
    """A tensor holds NaN or ±inf values."""


def check_finite(tensor: torch.Tensor, name: str, where: str, hint: str = "") -> None:
    """Raise NonFiniteError naming ``where`` and tensor ``name`` if ``tensor`` holds NaN/±inf."""
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return
    # A sum is finite iff every entry is (NaN and ±inf propagate through addition); it is one fast
    # vectorised reduction (5 ms vs 234 ms for isfinite().all() on a bf16 32000×2048 tensor). A finite
    # tensor whose sum overflows falls through to the exact check below.
    if tensor.numel() == 0 or bool(torch.isfinite(tensor.sum())):
        return
    finite = torch.isfinite(tensor)
    if bool(finite.all()):
        return
    bad = int((~finite).sum())
    nans = int(torch.isnan(tensor).sum())
    raise NonFiniteError(
        f"{where}: tensor '{name}' has {bad} non-finite values of {tensor.numel()} "
        f"({nans} NaN, {bad - nans} ±inf){'; ' + hint if hint else ''}"
    )


def check_checkpoint_finite(
    path: str | Path, *, allow_pickle: bool = False, hint: str = "", adapter: bool | None = None
) -> int:
    """Read every tensor of the checkpoint (or adapter) at ``path`` once; returns how many were checked.

    ``adapter``: read ``path`` as a PEFT adapter (None: when it holds adapter_config.json).
    Also refuses what CheckpointReader / LoraAdapter.load refuse: a path with no weights, and pickle unless allowed.
    """
    from harness.core.checkpoints._reader import CheckpointReader

    target = Path(path)
    if adapter is None:
        adapter = target.is_dir() and (target / "adapter_config.json").is_file()
    if adapter:
        from harness.core.checkpoints._lora import LoraAdapter

        reader = LoraAdapter.load(target, allow_pickle=allow_pickle).reader
    else:
        reader = CheckpointReader(target, allow_pickle=allow_pickle)
    with reader:
        names = reader.names()
        for name in names:
            check_finite(reader.get(name), name, str(target), hint)
    return len(names)
