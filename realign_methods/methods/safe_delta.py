"""Safe Delta (Lu et al. 2025, arXiv 2505.12038): keep the delta parameters that buy the most utility
per unit of safety loss, under a safety-loss budget, then add a safety compensation vector.

Per linear layer, with δ = W_F − W_A and H = XᵀX of the *aligned* model's inputs on safety data
(harmful prompts with safe responses), damped (see ``_obs.damped_inverse``):

* safety loss of keeping δ_ij (OBS): ℓ_ij = δ_ij² / (2 [H⁻¹]_jj);
* utility of δ_ij: u_ij = δ_ij² (its share of the fine-tuning update);
* selection: the greedy knapsack on u/ℓ = 2[H⁻¹]_jj, descending (ties: row-major order), keeping the
  longest prefix whose Σℓ ≤ ε with ε = ``budget`` · Σ_all ℓ (the layer's whole-delta safety loss);
* compensation (``compensate``): the OBS step that keeps the kept δ fixed and lets the unselected
  coordinates move to restore the aligned layer's outputs, Σ_q δ_q H⁻¹[q, :]/[H⁻¹]_qq on them.

Output: W_A + δ ⊙ keep + compensation ⊙ (1 − keep). Tensors without statistics keep θ_F.
Assumed details (the authors' code was not reachable here): the utility proxy δ², the budget as a
fraction of the layer's whole-delta loss, and the single-weight OBS combination of the compensation.
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


class SafeDeltaParams(MethodParams):
    budget: float = Field(
        0.1, ge=0.0, le=1.0, description="safety-loss budget ε per layer, as a fraction of the whole delta's loss"
    )
    damp: float = Field(0.01, gt=0.0, le=10.0, description="ridge added to XᵀX, times its mean diagonal")
    compensate: bool = Field(True, description="add the safety compensation vector")
    calibration_examples: int = Field(64, ge=1, le=10_000, description="harmful prompt + safe response examples")
    calibration_max_length: int = Field(128, ge=8, le=8192, description="tokens per calibration example")


def select_deltas(delta: torch.Tensor, hinv: torch.Tensor, budget: float) -> torch.Tensor:
    """Boolean keep-mask: greedy on utility/safety-loss under Σℓ ≤ budget · Σ_all ℓ."""
    d = torch.diagonal(hinv)
    loss = (delta.double() ** 2 / (2 * d)).reshape(-1)
    ratio = (2 * d).expand_as(delta).reshape(-1)
    order = torch.sort(-ratio, stable=True).indices
    within = torch.cumsum(loss[order], 0) <= budget * float(loss.sum())
    keep = torch.zeros(delta.numel(), dtype=torch.bool)
    keep[order[within]] = True
    return keep.reshape(delta.shape)


def safe_delta(
    aligned: torch.Tensor, finetuned: torch.Tensor, xtx: torch.Tensor, budget: float, damp: float, compensate: bool
) -> torch.Tensor:
    """The Safe Delta weight of one linear layer (float32)."""
    delta = finetuned.double() - aligned.double()
    hinv = damped_inverse(xtx, damp)
    keep = select_deltas(delta, hinv, budget)
    kept = torch.where(keep, delta, torch.zeros_like(delta))
    out = aligned.double() + kept
    if compensate:
        out = out + torch.where(keep, torch.zeros_like(delta), obs_spread(kept, hinv))
    return out.float()


@register_method
class SafeDelta(CalibratedMethod):
    info = MethodInfo(
        name="safe_delta",
        summary=(
            "keep the delta params with most utility per OBS safety loss (XᵀX of θ_A on safety data) "
            "under a budget, + compensation (arXiv 2505.12038)"
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
            return inputs.raw(Role.FINETUNED)
        return safe_delta(
            inputs.aligned, inputs.finetuned(), stats.xtx(ctx.name), params.budget, params.damp, params.compensate
        )
