"""Safe Delta (Lu et al. 2025, arXiv 2505.12038): keep the delta parameters that cost the least
safety loss, under a safety-loss budget, with the safety compensation of the kept ones.

As the authors' code (github.com/ColinLu50/SafeDelta) runs it, per linear layer of the decoder, with
H = XᵀX of the *aligned* model's inputs on safety data (harmful prompts with safe responses), damped,
and U the upper Cholesky factor of H⁻¹ (see ``_obs``), starting from W = W_A:

* the columns are taken in blocks of 2048; in each, δ = W_F − W (W as compensated so far) and the
  safety loss of keeping δ_ij is ℓ_ij = δ_ij² / U_jj²;
* entries are ranked by 1/U_jj² ascending (ties: row-major order); the 15% with the largest 1/U_jj²
  are never kept; the longest prefix with Σℓ ≤ ε is kept, ε = mean_block(1/U_jj²) · ``scale``/2 ·
  rows/4096 (the authors' absolute budget, 2 = 4096/2048);
* kept entries are set to W_F and, 4 columns at a time, their change is spread over the later
  columns as OBS does (``compensate``): the compensation vector that holds the aligned layer's outputs.

Tensors without statistics (embeddings, norms, lm_head) are θ_A's, as in the authors' output.
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
from realign_methods.methods._obs import inverse_hessian_cholesky, sequential_obs

#: the authors' constants: column block, sub-block of the compensation, share never kept
BLOCK, SUB_BLOCK, NEVER_KEPT = 2048, 4, 0.15


class SafeDeltaParams(MethodParams):
    scale: float = Field(
        0.1,
        ge=0.0,
        le=1e6,
        description="safety-loss budget s: ε = mean(1/U_jj²)·s/2·rows/4096 per 2048-column block (authors: 0.1-0.11)",
    )
    damp: float = Field(0.01, gt=0.0, le=10.0, description="ridge added to XᵀX, times its mean diagonal")
    compensate: bool = Field(True, description="add the safety compensation vector")
    calibration_examples: int = Field(64, ge=1, le=10_000, description="harmful prompt + safe response examples")
    calibration_max_length: int = Field(128, ge=8, le=8192, description="tokens per calibration example")


def keep_mask(delta: torch.Tensor, inv_u2: torch.Tensor, scale: float) -> torch.Tensor:
    """One block's kept entries: cheapest 1/U_jj² first, within Σ δ²/U_jj² ≤ mean(1/U_jj²)·scale/2·rows/4096."""
    per_entry = inv_u2.reshape(1, -1).expand_as(delta).reshape(-1)
    loss = (delta.double() ** 2).reshape(-1) * per_entry
    order = torch.sort(per_entry, stable=True).indices
    order = order[: order.numel() - int(NEVER_KEPT * order.numel())]
    budget = float(per_entry.mean()) * scale / 2 * delta.shape[0] / 4096
    keep = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    keep[order[torch.cumsum(loss[order], 0) <= budget]] = True
    return keep.reshape(delta.shape)


def safe_delta(
    aligned: torch.Tensor, finetuned: torch.Tensor, xtx: torch.Tensor, scale: float, damp: float, compensate: bool
) -> torch.Tensor:
    """The Safe Delta weight of one linear layer (float32)."""
    u = inverse_hessian_cholesky(xtx, damp)
    target = finetuned.double()
    inv_u2 = 1.0 / torch.diagonal(u) ** 2

    def select(cols: slice, current: torch.Tensor) -> torch.Tensor:
        return keep_mask(target[:, cols] - current, inv_u2[cols], scale)

    return sequential_obs(aligned, target, u, select, BLOCK, SUB_BLOCK, compensate).float()


@register_method
class SafeDelta(CalibratedMethod):
    info = MethodInfo(
        name="safe_delta",
        summary=(
            "keep the delta params of least OBS safety loss (XᵀX of θ_A on safety data) under a budget, "
            "with sequential OBS compensation (arXiv 2505.12038)"
        ),
        params=SafeDeltaParams,
        required=frozenset({Role.ALIGNED, Role.FINETUNED}),
        optional=frozenset({Role.CALIBRATION_DATA}),
        single=frozenset({Role.FINETUNED}),
        data_free=False,
        reference=(
            "Lu et al., Safe Delta: Consistently Preserving Safety when Fine-Tuning LLMs on Diverse Datasets, "
            "ICML 2025, arXiv:2505.12038 (github.com/ColinLu50/SafeDelta)"
        ),
        reference_inputs=(Role.FINETUNED,),
        calibration=CalibrationSpec(data="harmful_refusals", statistics=frozenset({"xtx"}), model="aligned"),
        settings="dense; LoRA fine-tunes are merged to dense first",
    )

    def merge_tensor(self, inputs: TensorInputs, params: SafeDeltaParams, ctx: TensorContext) -> torch.Tensor:
        stats: Statistics = ctx.state
        if not stats.has(ctx.name):
            return inputs.raw(Role.ALIGNED)
        return safe_delta(
            inputs.aligned, inputs.finetuned(), stats.xtx(ctx.name), params.scale, params.damp, params.compensate
        )
