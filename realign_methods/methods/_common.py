"""Helpers shared by the built-in methods: row chunking (bounded memory) and task-vector rows."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from pydantic import Field

from harness.core.errors import ConfigError
from realign_methods._method import Method, PrepareContext, Role, TensorContext, TensorInputs
from realign_methods.calibration import Statistics

#: elements per float32 operand in one chunk (16 MiB): keeps temporaries small on huge embeddings
CHUNK_ELEMENTS = 1 << 22

Lam = Field(1.0, ge=-10.0, le=10.0, description="scaling λ of the merged task vector")


def anchor_role(inputs: TensorInputs) -> Role:
    """The model task vectors are measured from: ``base`` when given, else ``aligned``."""
    return Role.BASE if inputs.has(Role.BASE) else Role.ALIGNED


def row_slices(shape: torch.Size | tuple[int, ...], chunk_elements: int = CHUNK_ELEMENTS) -> Iterator[slice]:
    if len(shape) == 0:
        yield slice(None)
        return
    row = math.prod(shape[1:]) or 1
    step = max(1, chunk_elements // row)
    for start in range(0, shape[0], step):
        yield slice(start, min(start + step, shape[0]))


def rows(inputs: TensorInputs, role: str, index: int, sl: slice) -> torch.Tensor:
    raw = inputs.raw(role, index)
    return (raw[sl] if raw.dim() else raw).float()


def task_vector_rows(
    inputs: TensorInputs, anchor_rows: torch.Tensor, anchor: str, index: int, sl: slice
) -> torch.Tensor:
    """Rows ``sl`` of task vector ``index`` (fine-tuned models first, then adapters)."""
    n_dense = inputs.count(Role.FINETUNED)
    if index < n_dense:
        return rows(inputs, Role.FINETUNED, index, sl) - anchor_rows
    delta = inputs.adapter_delta(index - n_dense, sl)
    return torch.zeros_like(anchor_rows) if delta is None else delta.reshape(anchor_rows.shape)


def map_rows(
    inputs: TensorInputs, ctx: TensorContext, reference: str, fn: Callable[[slice], torch.Tensor]
) -> torch.Tensor:
    """Build the output chunk by chunk along dim 0 (``fn(rows) -> float32 rows``), in the output dtype."""
    raw = inputs.raw(reference)
    out = torch.empty(raw.shape, dtype=ctx.out_dtype or raw.dtype)
    if raw.dim() == 0:
        return fn(slice(None)).to(out.dtype)
    for sl in row_slices(raw.shape):
        out[sl] = fn(sl)
    return out


def finetuned_weight(inputs: TensorInputs) -> torch.Tensor:
    """θ_F of this tensor: the dense fine-tune, or θ_A + s·B A of the (θ_A-relative) adapter."""
    if inputs.has(Role.FINETUNED):
        return inputs.finetuned(0)
    delta = inputs.adapter_delta(0)
    aligned = inputs.aligned
    return aligned if delta is None else aligned + delta.reshape(aligned.shape)


class CalibratedMethod(Method):
    """A method whose ``info.calibration`` the engine runs before ``prepare``: the statistics are the state."""

    def prepare(self, ctx: PrepareContext) -> Statistics:
        if ctx.calibration is None:
            raise ConfigError(
                f"{self.info.name}: no calibration statistics (the engine computes them from calibration_data)"
            )
        return ctx.calibration
