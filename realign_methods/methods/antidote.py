"""Antidote (Huang et al. 2024, arXiv 2408.09600): one-shot pruning after harmful fine-tuning.

Each weight of each linear layer of the fine-tuned model is scored with Wanda's importance on
*harmful* calibration data (harmful prompt + harmful answer), S_ij = |W_ij| · ‖X_j‖₂, and the top
``mask_ratio`` fraction of each layer (weight matrix) is set to zero: those weights matter most for
producing harmful answers. Tensors without calibration statistics (embeddings, norms, lm_head) are
kept. LoRA fine-tunes are read merged (base + s·B·A) and pruned as dense weights.
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


class AntidoteParams(MethodParams):
    mask_ratio: float = Field(
        0.2, gt=0.0, lt=1.0, description="fraction of each layer's weights pruned (highest harmful importance)"
    )
    calibration_examples: int = Field(64, ge=1, le=10_000, description="harmful prompt+answer examples")
    calibration_max_length: int = Field(128, ge=8, le=8192, description="tokens per calibration example")


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ (float32)."""
    return weight.float().abs() * input_norms.float().reshape(1, -1)


def prune_top(weight: torch.Tensor, scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """``weight`` with its ⌊ratio · numel⌋ highest-scoring entries set to zero."""
    count = int(ratio * weight.numel())
    out = weight.float().clone()
    if count > 0:
        out.view(-1)[torch.topk(scores.reshape(-1), count).indices] = 0.0
    return out


@register_method
class Antidote(CalibratedMethod):
    info = MethodInfo(
        name="antidote",
        summary="prune the top mask_ratio of each linear layer by Wanda importance |W|·‖X‖ on harmful data (arXiv 2408.09600)",
        params=AntidoteParams,
        required=frozenset({Role.FINETUNED}),
        optional=frozenset({Role.CALIBRATION_DATA}),
        single=frozenset({Role.FINETUNED}),
        data_free=False,
        reference=(
            "Huang et al., Antidote: Post-fine-tuning Safety Alignment for Large Language Models against "
            "Harmful Fine-tuning, arXiv:2408.09600"
        ),
        reference_inputs=(Role.FINETUNED,),
        calibration=CalibrationSpec(data="harmful_answers", statistics=frozenset({"input_norms"}), model="finetuned"),
        settings="dense; LoRA fine-tunes are merged to dense first",
    )

    def merge_tensor(self, inputs: TensorInputs, params: AntidoteParams, ctx: TensorContext) -> torch.Tensor:
        stats: Statistics = ctx.state
        if not stats.has(ctx.name):
            return inputs.raw(Role.FINETUNED)
        weight = inputs.finetuned()
        return prune_top(weight, wanda_scores(weight, stats.input_norms(ctx.name)), params.mask_ratio)
