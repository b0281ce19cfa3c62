"""SafeMERGE (Djuhera et al., 2025, arXiv:2503.17239): merge only the layers that stray from safety.

Per weight the fine-tuning update ΔW = θ_F − θ_A is compared with its projection onto the Safe LoRA
alignment subspace (V = θ_A − θ_base, C = V Vᵀ / ‖V‖_F): ρ = cos(ΔW, C ΔW). A weight with ρ < τ
strays from the safe behaviour and is replaced by a merge of the fine-tuned and the safety-aligned
layer, measured from the base: θ_base + merge(α·(θ_F − θ_base), (1−α)·(θ_A − θ_base)) with a linear,
TIES or DARE rule; the linear rule is α θ_F + (1−α) θ_A. Other weights keep θ_F. Weights without a
2-D shape (norms) and weights the fine-tune left unchanged are kept as fine-tuned.

The paper's safety model is a LoRA trained on safety data over the same base; here the aligned
model θ_A plays that role (its layers are the "safety-aligned layers"). Dense fine-tunes and LoRA
adapters (ΔW = s·B A relative to θ_A) are both supported.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from realign_methods import _ops as ops
from realign_methods._method import Method, MethodInfo, MethodParams, Role, TensorContext, TensorInputs
from realign_methods._registry import register_method
from realign_methods.methods._common import finetuned_weight
from realign_methods.methods._subspace import flat_cosine, project_onto_alignment

_REFERENCE = (
    "Djuhera et al., SafeMERGE: Preserving Safety Alignment in Fine-Tuned Large Language Models via "
    "Selective Layer-Wise Model Merging, arXiv:2503.17239 (github.com/aladinD/SafeMERGE)"
)


class SafeMergeParams(MethodParams):
    # the authors' defaults (github.com/aladinD/SafeMERGE: τ = 0.35, merge weights [0.8, 0.2])
    threshold: float = Field(0.35, ge=-1.0, le=1.0, description="merge a layer when cos(ΔW, CΔW) < τ")
    alpha: float = Field(
        0.8, ge=0.0, le=1.0, description="weight of the fine-tuned layer in the merge (1−α: safety layer)"
    )
    rule: Literal["linear", "ties", "dare"] = Field("linear", description="how a straying layer is merged")
    density: float = Field(0.5, gt=0.0, le=1.0, description="TIES: kept fraction of each task vector")
    p: float = Field(0.5, ge=0.0, lt=1.0, description="DARE: drop probability of each task vector")


def safemerge_similarity(finetuned: torch.Tensor, aligned: torch.Tensor, base: torch.Tensor) -> float:
    """ρ = cos(ΔW, C ΔW) of one 2-D weight, ΔW = θ_F − θ_A."""
    update = finetuned - aligned
    return flat_cosine(update, project_onto_alignment(aligned - base, update))


def safemerge_layer(
    finetuned: torch.Tensor,
    aligned: torch.Tensor,
    base: torch.Tensor,
    params: SafeMergeParams,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The merged layer θ_base + merge(α(θ_F − θ_base), (1−α)(θ_A − θ_base))."""
    deltas = [finetuned - base, aligned - base]
    weights = [params.alpha, 1.0 - params.alpha]
    if params.rule == "ties":
        merged = ops.ties(deltas, params.density, weights=weights)
    elif params.rule == "dare":
        merged = ops.weighted_sum([ops.dare(delta, params.p, generator) for delta in deltas], weights)
    else:
        merged = ops.weighted_sum(deltas, weights)
    return base + merged


def safemerge_tensor(
    finetuned: torch.Tensor,
    aligned: torch.Tensor,
    base: torch.Tensor,
    params: SafeMergeParams,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """θ_F, or the merged layer where the update strays from the alignment subspace (ρ < τ)."""
    if finetuned.dim() != 2 or torch.equal(finetuned, aligned):
        return finetuned
    if safemerge_similarity(finetuned, aligned, base) >= params.threshold:
        return finetuned
    return safemerge_layer(finetuned, aligned, base, params, generator)


@register_method
class SafeMerge(Method):
    info = MethodInfo(
        name="safemerge",
        summary=(
            "arXiv:2503.17239 — "
            "per layer ρ = cos(ΔW, CΔW) on the Safe LoRA subspace (V = θ_A − θ_base); layers with ρ < τ become "
            "θ_base + merge(α(θ_F − θ_base), (1−α)(θ_A − θ_base)) (linear | TIES | DARE), others keep θ_F. "
            "Settings: dense fine-tunes and LoRA adapters"
        ),
        params=SafeMergeParams,
        required=frozenset({Role.ALIGNED, Role.BASE}),
        one_of=(frozenset({Role.FINETUNED, Role.ADAPTERS}),),
        single=frozenset({Role.FINETUNED, Role.ADAPTERS}),
        reference=_REFERENCE,
        reference_inputs=(Role.FINETUNED, Role.ALIGNED),
    )

    def merge_tensor(self, inputs: TensorInputs, params: SafeMergeParams, ctx: TensorContext) -> torch.Tensor:
        return safemerge_tensor(finetuned_weight(inputs), inputs.aligned, inputs.base, params, ctx.generator())
