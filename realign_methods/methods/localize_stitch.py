"""Localize-and-Stitch, dataless variant (He et al., 2024, arXiv:2408.13656).

Localize: for each task vector τ_i = θ_F_i − θ_A keep the binary mask γ_i of its top-k entries by
magnitude (k a fraction ``density`` of all parameters; ``scope=model`` ranks over the whole model as
the paper's Algorithm 1 does, ``scope=tensor`` within each tensor). Stitch: where masks overlap the
deltas are averaged, γ'_i = γ_i / Σ_j γ_j, and θ = θ_A + Σ_i γ'_i ⊙ τ_i. With one fine-tune this is
a sparse stitch of its largest changes into the aligned model. Entries equal to the threshold are
kept (ties), zero entries never count as localized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import Field

from realign_methods import _ops as ops
from realign_methods._method import (
    Method,
    MethodInfo,
    MethodParams,
    PrepareContext,
    Role,
    TensorContext,
    TensorInputs,
)
from realign_methods._registry import register_method

_REFERENCE = (
    "He et al., Localize-and-Stitch: Efficient Model Merging via Sparse Task Arithmetic, TMLR 2025, "
    "arXiv:2408.13656 (github.com/uiuctml/Localize-and-Stitch); dataless localization"
)


class LocalizeStitchParams(MethodParams):
    # the authors' dataless language script uses 5% (1% is the paper's figure for the learned masks)
    density: float = Field(0.05, gt=0.0, le=1.0, description="k: localized fraction of each task vector")
    scope: Literal["model", "tensor"] = Field(
        "model", description="rank |τ| over the whole model (paper) or per tensor"
    )


@dataclass
class _Thresholds:
    #: per task vector, the magnitude of its k-th largest entry over the model (scope=model)
    global_thresholds: list[float | None] = field(default_factory=list)


def topk_threshold(nonzero: Sequence[torch.Tensor], total: int, density: float) -> float | None:
    """The k-th largest magnitude, k = int(density·total), of a task vector with ``total`` entries whose
    non-zero magnitudes are ``nonzero`` (zeros are never localized, so they need not be held: a LoRA
    fine-tune's task vector is mostly zeros). None: every non-zero entry is within the top k."""
    k = int(density * total)
    if k == 0:
        return float("inf")
    values = torch.cat([m.reshape(-1) for m in nonzero]) if nonzero else torch.zeros(0)
    if k >= values.numel():
        return None
    return float(values.kthvalue(values.numel() - k + 1).values)


def localize(task_vector: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """γ: 1 where |τ| ≥ threshold and τ ≠ 0 (None keeps every non-zero entry)."""
    keep = task_vector != 0
    if threshold is not None:
        keep &= task_vector.abs() >= threshold
    return keep.to(torch.float32)


def stitch(anchor: torch.Tensor, task_vectors: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> torch.Tensor:
    """θ_A + Σ_i (γ_i / Σ_j γ_j) ⊙ τ_i (overlaps averaged, untouched entries stay θ_A)."""
    total = torch.zeros_like(anchor)
    count = torch.zeros_like(anchor)
    for task_vector, mask in zip(task_vectors, masks, strict=True):
        total += task_vector * mask
        count += mask
    return anchor + total / count.clamp(min=1.0)


@register_method
class LocalizeStitch(Method):
    info = MethodInfo(
        name="localize_stitch",
        summary=(
            "arXiv:2408.13656 — "
            "dataless Localize-and-Stitch: keep each task vector's top-k |τ| (k = density, over the model), average "
            "overlaps, stitch into θ_A. Settings: dense fine-tunes and LoRA adapters, one or several"
        ),
        params=LocalizeStitchParams,
        required=frozenset({Role.ALIGNED}),
        one_of=(frozenset({Role.FINETUNED, Role.ADAPTERS}),),
        reference=_REFERENCE,
        reference_inputs=(Role.ALIGNED,),
    )

    def prepare(self, ctx: PrepareContext) -> _Thresholds:
        params: LocalizeStitchParams = ctx.params  # type: ignore[assignment]
        if params.scope != "model":
            return _Thresholds()
        nonzero: list[list[torch.Tensor]] = []
        total = 0
        for name in ctx.names:
            inputs = ctx.inputs(name)
            if not inputs.raw(Role.ALIGNED).is_floating_point():
                continue
            total += inputs.raw(Role.ALIGNED).numel()
            for index, task_vector in enumerate(inputs.task_vectors(Role.ALIGNED)):
                if len(nonzero) <= index:
                    nonzero.append([])
                magnitudes = task_vector.abs().reshape(-1)
                nonzero[index].append(magnitudes[magnitudes > 0])
            inputs.release()
        return _Thresholds([topk_threshold(values, total, params.density) for values in nonzero])

    def merge_tensor(self, inputs: TensorInputs, params: LocalizeStitchParams, ctx: TensorContext) -> torch.Tensor:
        state: _Thresholds = ctx.state
        task_vectors = list(inputs.task_vectors(Role.ALIGNED))
        if params.scope == "model":
            thresholds = state.global_thresholds
        else:
            thresholds = [ops.magnitude_threshold(tv, params.density) for tv in task_vectors]
        masks = [localize(tv, t) for tv, t in zip(task_vectors, thresholds, strict=True)]
        return stitch(inputs.aligned, task_vectors, masks)
