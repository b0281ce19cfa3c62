"""IRR (Wu et al. 2024, arXiv 2412.11041): Identify the unsafe delta parameters, Remove them,
Recalibrate the retained ones.

Per linear layer, with δ = W_F − W_A, the safety vector v = W_A − W_U (aligned minus its harmful
fine-tune, as in RESTA) and F the diagonal Fisher of the fine-tuned model's NLL on safety data
(harmful prompts with safe responses):

* identify: δ_ij is a candidate when it conflicts with the safety vector, sign(δ_ij) ≠ sign(v_ij)
  (δ_ij · v_ij < 0); its safety importance is s_ij = F_ij · δ_ij² (the Fisher estimate of the
  safety-loss change of removing it). The ``removal_fraction`` of candidates with the highest s
  (⌊fraction · #candidates⌋ per layer) are unsafe;
* remove: unsafe entries go back to W_A;
* recalibrate (``recalibrate``): the retained entries take the OBS compensation of those removals,
  −Σ_{q unsafe} δ_q H⁻¹[q, :]/[H⁻¹]_qq with H = XᵀX of θ_F's inputs on the same data, so the
  layer's outputs on safety data change least beyond the removals.

Tensors without statistics keep θ_F. Assumed details (the authors' code was not read): v = θ_A − θ_U,
the top-fraction rule among conflicts and the single-weight OBS combination.
"""

from __future__ import annotations

import torch
from pydantic import Field

from realign_methods._method import (
    MethodInfo,
    MethodParams,
    Role,
    TensorContext,
    TensorInputs,
)
from realign_methods._registry import register_method
from realign_methods.calibration import CalibrationSpec, Statistics
from realign_methods.methods._common import CalibratedMethod
from realign_methods.methods._obs import damped_inverse, obs_spread


class IrrParams(MethodParams):
    removal_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="share of sign-conflicting deltas removed (highest Fisher·δ²)"
    )
    damp: float = Field(0.01, gt=0.0, le=10.0, description="ridge added to XᵀX, times its mean diagonal")
    recalibrate: bool = Field(True, description="OBS compensation of the retained deltas")
    calibration_examples: int = Field(64, ge=1, le=10_000, description="harmful prompt + safe response examples")
    calibration_max_length: int = Field(128, ge=8, le=8192, description="tokens per calibration example")


def unsafe_mask(
    delta: torch.Tensor, safety_vector: torch.Tensor, fisher: torch.Tensor, fraction: float
) -> torch.Tensor:
    """Boolean mask of the unsafe deltas: the top ``fraction`` of sign conflicts by Fisher · δ²."""
    conflict = (delta * safety_vector < 0).reshape(-1)
    count = int(fraction * int(conflict.sum()))
    mask = torch.zeros(delta.numel(), dtype=torch.bool)
    if count > 0:
        score = (fisher.double() * delta.double() ** 2).reshape(-1)
        score = torch.where(conflict, score, torch.full_like(score, -1.0))
        mask[torch.topk(score, count).indices] = True
    return mask.reshape(delta.shape)


def irr(
    aligned: torch.Tensor,
    unaligned: torch.Tensor,
    finetuned: torch.Tensor,
    fisher: torch.Tensor,
    xtx: torch.Tensor | None,
    fraction: float,
    damp: float,
) -> torch.Tensor:
    """The IRR weight of one linear layer (float32); ``xtx`` None skips the recalibration."""
    delta = finetuned.double() - aligned.double()
    unsafe = unsafe_mask(delta, aligned.double() - unaligned.double(), fisher, fraction)
    removed = torch.where(unsafe, delta, torch.zeros_like(delta))
    out = finetuned.double() - removed
    if xtx is not None:
        out = out - torch.where(unsafe, torch.zeros_like(delta), obs_spread(removed, damped_inverse(xtx, damp)))
    return out.float()


@register_method
class Irr(CalibratedMethod):
    info = MethodInfo(
        name="irr",
        summary="remove deltas that conflict with θ_A−θ_U and matter by Fisher on safety data; OBS-recalibrate the rest (arXiv 2412.11041)",
        params=IrrParams,
        required=frozenset({Role.ALIGNED, Role.UNALIGNED, Role.FINETUNED}),
        optional=frozenset({Role.CALIBRATION_DATA}),
        single=frozenset({Role.FINETUNED}),
        data_free=False,
        reference=(
            "Wu et al., Separate the Wheat from the Chaff: A Post-Hoc Approach to Safety Re-Alignment for "
            "Fine-Tuned Language Models, arXiv:2412.11041 (github.com/pikepokenew/IRR)"
        ),
        reference_inputs=(Role.FINETUNED,),
        calibration=CalibrationSpec(
            data="harmful_refusals", statistics=frozenset({"fisher", "xtx"}), model="finetuned"
        ),
        settings="dense; LoRA fine-tunes are merged to dense first",
    )

    def merge_tensor(self, inputs: TensorInputs, params: IrrParams, ctx: TensorContext) -> torch.Tensor:
        stats: Statistics = ctx.state
        if not stats.has(ctx.name):
            return inputs.raw(Role.FINETUNED)
        xtx = stats.xtx(ctx.name) if params.recalibrate else None
        return irr(
            inputs.aligned,
            inputs.unaligned,
            inputs.finetuned(),
            stats.fisher(ctx.name),
            xtx,
            params.removal_fraction,
            params.damp,
        )
