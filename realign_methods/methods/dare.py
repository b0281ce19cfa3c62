"""DARE: drop a fraction p of each task vector at random, rescale survivors by 1/(1−p), add λ·Σ."""

from __future__ import annotations

import torch
from pydantic import Field

from realign_methods import _ops as ops
from realign_methods._method import Method, MethodInfo, MethodParams, Role, TensorContext, TensorInputs
from realign_methods._registry import register_method
from realign_methods.methods._common import Lam, anchor_role


class DareParams(MethodParams):
    p: float = Field(0.3, ge=0.0, lt=1.0, description="drop probability per element")
    lam: float = Lam


@register_method
class Dare(Method):
    info = MethodInfo(
        name="dare",
        summary="anchor + λ·Σ DARE(task vector, p); seeded per tensor (global seed + tensor name)",
        params=DareParams,
        one_of=(frozenset({Role.FINETUNED, Role.ADAPTERS}), frozenset({Role.BASE, Role.ALIGNED})),
        reference="Yu et al., Language Models are Super Mario (DARE), ICML 2024, arXiv:2311.03099",
        reference_inputs=(Role.BASE, Role.ALIGNED),
    )

    def merge_tensor(self, inputs: TensorInputs, params: DareParams, ctx: TensorContext) -> torch.Tensor:
        # Whole tensor, not row chunks: the Bernoulli stream must not depend on chunking.
        anchor = anchor_role(inputs)
        generator = ctx.generator()
        total = inputs.get(anchor)
        for delta in inputs.task_vectors(anchor):
            total = total + ops.dare(delta, params.p, generator) * params.lam
        return total
