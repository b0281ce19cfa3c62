"""Antidote (Huang et al. 2024, arXiv 2408.09600): one-shot pruning after harmful fine-tuning.

Each entry of each linear layer is scored with Wanda's importance on *harmful* calibration data
(harmful prompt + harmful answer, statistics of the fine-tuned model), S_ij = |W_ij| · ‖X_j‖₂, and in
each output row (Wanda's comparison group, as in the authors' code) the top ``mask_ratio`` fraction
is pruned: those entries matter most for producing harmful answers.

What is pruned (``prune``):
- ``update`` (default): the fine-tuning update δ = θ_F − θ_A is scored (W = δ) and its pruned entries
  are reset to θ_A. The authors' main (LoRA) setting prunes only the fine-tune's own parameters, its
  LoRA factors, never the aligned weights beneath; a dense update is our reading of that for any
  fine-tune (ours continue θ_A's adapter, so their factors are not the fine-tune's alone). Needs
  ``aligned``.
- ``weights``: the fine-tuned weights themselves are scored and set to zero (the authors'
  full-fine-tuning branch, which there is limited to q/k/v). Measured on the 135M organism: even 1% per
  row breaks it (math answer NLL 1.0 -> 9-12).

Tensors without calibration statistics (embeddings, norms, lm_head) are kept. LoRA fine-tunes are read
merged (base + s·B·A).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field

from harness.core.errors import ConfigError
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
    # the authors' train.py default (their scripts use 0.01-0.2)
    mask_ratio: float = Field(
        0.1, gt=0.0, lt=1.0, description="fraction of each output row pruned (highest harmful importance)"
    )
    prune: Literal["update", "weights"] = Field(
        "update", description="update: θ_F − θ_A's entries reset to θ_A (needs aligned); weights: θ_F's set to 0"
    )
    calibration_examples: int = Field(64, ge=1, le=10_000, description="harmful prompt+answer examples")
    calibration_max_length: int = Field(128, ge=8, le=8192, description="tokens per calibration example")


def wanda_scores(weight: torch.Tensor, input_norms: torch.Tensor) -> torch.Tensor:
    """|W_ij| · ‖X_j‖₂ (float32)."""
    return weight.float().abs() * input_norms.float().reshape(1, -1)


def top_per_row(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean mask of the ⌊ratio · columns⌋ highest scores of each row."""
    count = int(ratio * scores.shape[1])
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if count > 0:
        mask.scatter_(1, torch.topk(scores, count, dim=1).indices, True)
    return mask


@register_method
class Antidote(CalibratedMethod):
    info = MethodInfo(
        name="antidote",
        summary=(
            "prune the top mask_ratio of each row of θ_F − θ_A (or of θ_F) by Wanda importance |W|·‖X‖ "
            "on harmful data (arXiv 2408.09600)"
        ),
        params=AntidoteParams,
        required=frozenset({Role.FINETUNED}),
        optional=frozenset({Role.ALIGNED, Role.CALIBRATION_DATA}),
        single=frozenset({Role.FINETUNED}),
        data_free=False,
        reference=(
            "Huang et al., Antidote: Post-fine-tuning Safety Alignment for Large Language Models against "
            "Harmful Fine-tuning, arXiv:2408.09600"
        ),
        reference_inputs=(Role.FINETUNED,),
        calibration=CalibrationSpec(data="harmful_answers", statistics=frozenset({"input_norms"}), model="finetuned"),
        settings="dense; LoRA fine-tunes are merged to dense first (prune=update needs aligned)",
    )

    def check_params_inputs(self, params: Any, given: Mapping[str, int]) -> None:
        if params.prune == "update" and Role.ALIGNED not in given:
            raise ConfigError(
                "method 'antidote': prune='update' prunes θ_F − θ_A and needs input aligned (or pass prune='weights')"
            )

    def merge_tensor(self, inputs: TensorInputs, params: AntidoteParams, ctx: TensorContext) -> torch.Tensor:
        stats: Statistics = ctx.state
        if not stats.has(ctx.name):
            return inputs.raw(Role.FINETUNED)
        weight = inputs.finetuned()
        norms = stats.input_norms(ctx.name)
        if params.prune == "weights":
            return weight.masked_fill(top_per_row(wanda_scores(weight, norms), params.mask_ratio), 0.0)
        aligned = inputs.aligned
        return torch.where(top_per_row(wanda_scores(weight - aligned, norms), params.mask_ratio), aligned, weight)
