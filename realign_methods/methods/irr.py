"""IRR (Wu et al. 2024, arXiv 2412.11041): Identify the unsafe delta parameters, Remove them,
Recalibrate the retained ones.

As the authors' code (github.com/pikepokenew/IRR, SparseGPT-based) runs it, per linear layer, with
δ = W_F − W_A, the safety vector v = W_A − W_U and F a diagonal Fisher on safety data, walking the
columns in blocks of 128 from W = W_F (δ = 0 on dead inputs):

* identify: in each block, the candidates are the entries whose current (recalibrated so far) δ
  disagrees in sign with v, sign(δ_ij) ≠ sign(v_ij) (a zero counts as its own sign); they are sorted
  by F ascending (ties: row-major order) and all from position ⌊(1 − ``removal_fraction``) · n⌋ on
  are unsafe (the authors' default removes every conflict, fraction 1);
* remove: unsafe entries go back to W_A;
* recalibrate (``recalibrate``): column by column, the removals' error is spread over the later
  columns by SparseGPT's OBS step with H = XᵀX (see ``_obs``), so the layer's outputs change least.

Ours differs from the authors' in its data: F and H are both statistics of θ_F on harmful prompts with
safe responses (one calibration pass), where the authors take F from θ_A on its own answers to
harmful prompts and H from θ_F on the task's data. Tensors without statistics keep θ_F.
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

#: the authors' column block (SparseGPT's)
BLOCK = 128


class IrrParams(MethodParams):
    removal_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="share of each block's sign conflicts removed, highest Fisher first (authors: all)",
    )
    damp: float = Field(0.01, gt=0.0, le=10.0, description="ridge added to XᵀX, times its mean diagonal")
    recalibrate: bool = Field(True, description="OBS compensation of the retained deltas")
    calibration_examples: int = Field(64, ge=1, le=10_000, description="harmful prompt + safe response examples")
    calibration_max_length: int = Field(128, ge=8, le=8192, description="tokens per calibration example")


def unsafe_mask(
    delta: torch.Tensor, safety_vector: torch.Tensor, fisher: torch.Tensor, fraction: float
) -> torch.Tensor:
    """One block's unsafe entries: sign conflicts with the safety vector, the top ``fraction`` by Fisher."""
    conflict = (torch.sign(delta) != torch.sign(safety_vector)).reshape(-1)
    candidates = torch.nonzero(conflict).squeeze(1)
    order = torch.sort(fisher.double().reshape(-1)[candidates], stable=True).indices
    mask = torch.zeros(delta.numel(), dtype=torch.bool, device=delta.device)
    mask[candidates[order[int((1.0 - fraction) * candidates.numel()) :]]] = True
    return mask.reshape(delta.shape)


def irr(
    aligned: torch.Tensor,
    unaligned: torch.Tensor,
    finetuned: torch.Tensor,
    fisher: torch.Tensor,
    xtx: torch.Tensor,
    fraction: float,
    damp: float,
    recalibrate: bool = True,
) -> torch.Tensor:
    """The IRR weight of one linear layer (float32)."""
    a = aligned.double()
    safety_vector = a - unaligned.double()
    dead = torch.diagonal(xtx) == 0
    start = torch.where(dead.reshape(1, -1), a, finetuned.double())

    def select(cols: slice, current: torch.Tensor) -> torch.Tensor:
        return unsafe_mask(current - a[:, cols], safety_vector[:, cols], fisher[:, cols], fraction)

    u = inverse_hessian_cholesky(xtx, damp)
    return sequential_obs(start, a, u, select, BLOCK, compensate=recalibrate).float()


@register_method
class Irr(CalibratedMethod):
    info = MethodInfo(
        name="irr",
        summary=(
            "remove deltas whose sign conflicts with θ_A−θ_U, by Fisher on safety data; sequential-OBS "
            "recalibrate the rest (arXiv 2412.11041)"
        ),
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
        return irr(
            inputs.aligned,
            inputs.unaligned,
            inputs.finetuned(),
            stats.fisher(ctx.name),
            stats.xtx(ctx.name),
            params.removal_fraction,
            params.damp,
            params.recalibrate,
        )
