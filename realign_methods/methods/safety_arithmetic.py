"""Safety Arithmetic (Hazra et al., 2024, arXiv:2406.11801): harm-direction removal in the weights.

Harm direction: τ_H = θ_H − θ_0, the change a harmful fine-tune made to the model it started from.
Here θ_H is the ``unaligned`` input, which the harness builds by fine-tuning θ_A on harmful answers,
so θ_0 = θ_A and τ_H = θ_U − θ_A. Only its top-k entries by magnitude are kept (``density``, per
tensor), and θ' = θ_F − λ·τ_H^k.
"""

from __future__ import annotations

import torch
from pydantic import Field

from realign_methods import _ops as ops
from realign_methods._method import Method, MethodInfo, MethodParams, TensorContext, TensorInputs
from realign_methods._registry import register_method
from realign_methods.methods._common import finetuned_weight

_REFERENCE = (
    "Hazra et al., Safety Arithmetic: A Framework for Test-time Safety Alignment of Language Models by "
    "Steering Parameters and Activations, EMNLP 2024, arXiv:2406.11801 (github.com/declare-lab/safety-arithmetic)"
)


class SafetyArithmeticParams(MethodParams):
    lam: float = Field(0.5, ge=0.0, le=10.0, description="λ: strength of the harm-vector subtraction")
    density: float = Field(0.1, gt=0.0, le=1.0, description="k: kept fraction of τ_H by magnitude, per tensor")


def remove_harm_direction(
    finetuned: torch.Tensor, aligned: torch.Tensor, unaligned: torch.Tensor, lam: float, density: float
) -> torch.Tensor:
    """θ_F − λ·topk(θ_U − θ_A)."""
    return finetuned - lam * ops.magnitude_prune(unaligned - aligned, density)


@register_method("safety_arithmetic")
class SafetyArithmetic(Method):
    info = MethodInfo(
        name="safety_arithmetic",
        summary=(
            "harm-direction removal θ_F − λ·topk(τ_H), τ_H = θ_U − θ_A (the harmful fine-tune's change). "
            "Settings: dense fine-tunes and LoRA adapters"
        ),
        params=SafetyArithmeticParams,
        required=frozenset({"aligned", "unaligned"}),
        one_of=(frozenset({"finetuned", "adapters"}),),
        single=frozenset({"finetuned", "adapters"}),
        reference=_REFERENCE,
        reference_inputs=("finetuned", "aligned"),
    )

    def merge_tensor(
        self, name: str, inputs: TensorInputs, params: SafetyArithmeticParams, ctx: TensorContext
    ) -> torch.Tensor:
        return remove_harm_direction(finetuned_weight(inputs), inputs.aligned, inputs.unaligned, params.lam, params.density)
