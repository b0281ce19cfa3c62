"""Baselines: the fine-tuned model unchanged (``sft``) and the aligned model (``aligned``)."""

from __future__ import annotations

import torch

from harness.core.roles import ReferenceRole
from realign_methods._method import Method, MethodInfo, Role, TensorContext, TensorInputs
from realign_methods._registry import register_method


@register_method
class SFT(Method):
    info = MethodInfo(
        name="sft",
        summary="The fine-tuned model unchanged (a LoRA adapter is merged into the aligned model).",
        one_of=(frozenset({Role.FINETUNED, Role.ADAPTERS}),),
        optional=frozenset({Role.ALIGNED}),
        single=frozenset({Role.FINETUNED, Role.ADAPTERS}),
        reference="baseline (no realignment)",
        reference_inputs=(Role.FINETUNED, Role.ALIGNED),
        reference_role=ReferenceRole.FINETUNED,
    )

    def merge_tensor(self, inputs: TensorInputs, params: object, ctx: TensorContext) -> torch.Tensor:
        if inputs.has(Role.FINETUNED):
            return inputs.raw(Role.FINETUNED)
        delta = inputs.adapter_delta(0)
        return inputs.raw(Role.ALIGNED) if delta is None else inputs.aligned + delta


@register_method
class Aligned(Method):
    info = MethodInfo(
        name="aligned",
        summary="The safety-aligned model unchanged (upper bound on safety, no task skill).",
        required=frozenset({Role.ALIGNED}),
        reference="baseline (no fine-tuning)",
        reference_inputs=(Role.ALIGNED,),
        reference_role=ReferenceRole.ALIGNED,
    )

    def merge_tensor(self, inputs: TensorInputs, params: object, ctx: TensorContext) -> torch.Tensor:
        return inputs.raw(Role.ALIGNED)
