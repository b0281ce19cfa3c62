"""NLSR, neuron-level safety realignment (Yi et al., 2024, arXiv:2412.12497), data-free variant.

1. Super-aligned reference by extrapolating the alignment: θ_SA = θ_A + β(θ_A − θ_0), with θ_0 the
   pre-alignment model (``base``; without it the harmful fine-tune ``unaligned`` stands in).
2. Safety-critical neurons: per 2-D weight, the ``fraction`` of output rows (neurons) with the
   largest alignment change ‖θ_SA[r] − θ_0[r]‖. The paper scores neurons on safety data; this
   data-free importance is our stated substitute.
3. Per critical neuron, its similarity to the reference measured from θ_0,
   s_r = cos(θ_F[r] − θ_0[r], θ_SA[r] − θ_0[r]), was 1 before fine-tuning (θ_SA − θ_0 ∝ θ_A − θ_0);
   a neuron whose similarity dropped below ``threshold`` is transplanted: θ[r] = θ_SA[r]. Every
   other row keeps θ_F.
"""

from __future__ import annotations

import torch
from pydantic import Field

from realign_methods._method import Method, MethodInfo, MethodParams, Role, TensorContext, TensorInputs
from realign_methods._registry import register_method
from realign_methods.methods._common import finetuned_weight

_REFERENCE = (
    "Yi et al., NLSR: Neuron-Level Safety Realignment of Large Language Models Against Harmful Fine-Tuning, "
    "AAAI 2025, arXiv:2412.12497 (github.com/xinykou/NLSR); data-free neuron importance"
)


class NlsrParams(MethodParams):
    beta: float = Field(0.5, gt=0.0, le=10.0, description="β: extrapolation θ_SA = θ_A + β(θ_A − θ_0)")
    fraction: float = Field(0.2, gt=0.0, le=1.0, description="safety-critical share of each weight's neurons (rows)")
    threshold: float = Field(0.9, ge=-1.0, le=1.0, description="transplant a critical neuron when s_r < threshold")


def super_aligned(aligned: torch.Tensor, anchor: torch.Tensor, beta: float) -> torch.Tensor:
    """θ_SA = θ_A + β(θ_A − θ_0)."""
    return aligned + beta * (aligned - anchor)


def nlsr_tensor(
    finetuned: torch.Tensor, aligned: torch.Tensor, anchor: torch.Tensor, params: NlsrParams
) -> torch.Tensor:
    """θ_F with its drifted safety-critical rows replaced by θ_SA's (2-D weights; others returned as θ_F)."""
    if finetuned.dim() != 2:
        return finetuned
    reference = super_aligned(aligned, anchor, params.beta)
    alignment = reference - anchor
    importance = torch.linalg.vector_norm(alignment, dim=1)
    count = int(params.fraction * finetuned.shape[0])
    if count == 0 or not importance.max() > 0:
        return finetuned
    critical = torch.zeros(finetuned.shape[0], dtype=torch.bool)
    critical[torch.topk(importance, count).indices] = True
    critical &= importance > 0  # a neuron alignment never touched is not safety-critical
    similarity = torch.nn.functional.cosine_similarity(finetuned - anchor, alignment, dim=1)
    transplant = critical & (similarity < params.threshold)
    return torch.where(transplant[:, None], reference, finetuned)


@register_method
class Nlsr(Method):
    info = MethodInfo(
        name="nlsr",
        summary=(
            "arXiv:2412.12497 — "
            "θ_SA = θ_A + β(θ_A − θ_0); per weight the top-`fraction` rows by ‖θ_SA − θ_0‖ are safety-critical; "
            "those with cos(θ_F − θ_0, θ_SA − θ_0) < threshold are transplanted from θ_SA (θ_0 = base, else "
            "unaligned; data-free importance). Settings: dense fine-tunes and LoRA adapters"
        ),
        params=NlsrParams,
        required=frozenset({Role.ALIGNED}),
        one_of=(frozenset({Role.BASE, Role.UNALIGNED}), frozenset({Role.FINETUNED, Role.ADAPTERS})),
        single=frozenset({Role.FINETUNED, Role.ADAPTERS}),
        reference=_REFERENCE,
        reference_inputs=(Role.FINETUNED, Role.ALIGNED),
    )

    def merge_tensor(self, inputs: TensorInputs, params: NlsrParams, ctx: TensorContext) -> torch.Tensor:
        anchor = inputs.base if inputs.has(Role.BASE) else inputs.unaligned
        return nlsr_tensor(finetuned_weight(inputs), inputs.aligned, anchor, params)
