"""RESTA: add the safety vector v = θ_A − θ_U back to the fine-tuned model, optionally after DARE."""

from __future__ import annotations

import torch
from pydantic import Field

from realign_methods import _ops as ops
from realign_methods._method import Method, MethodInfo, MethodParams, Role, TensorContext, TensorInputs
from realign_methods._registry import register_method
from realign_methods.methods._common import map_rows, rows

_REFERENCE = (
    "Bhardwaj et al., Language Models are Homer Simpson! Safety Re-Alignment of Fine-tuned Language "
    "Models through Task Arithmetic (RESTA), ACL 2024, arXiv:2402.11746"
)
_GAMMA = Field(0.5, ge=0.0, le=10.0, description="weight γ of the safety vector θ_A − θ_U")


class RestaParams(MethodParams):
    gamma: float = _GAMMA


class RestaDareParams(MethodParams):
    gamma: float = _GAMMA
    p: float = Field(0.3, ge=0.0, lt=1.0, description="DARE drop probability on δ_F = θ_F − θ_A")


def _finetuned_rows(inputs: TensorInputs, aligned_rows: torch.Tensor, sl: slice) -> torch.Tensor:
    if inputs.has(Role.FINETUNED):
        return rows(inputs, Role.FINETUNED, 0, sl)
    delta = inputs.adapter_delta(0, sl)
    return aligned_rows if delta is None else aligned_rows + delta.reshape(aligned_rows.shape)


_INPUTS = {
    "required": frozenset({Role.ALIGNED, Role.UNALIGNED}),
    "one_of": (frozenset({Role.FINETUNED, Role.ADAPTERS}),),
    "single": frozenset({Role.FINETUNED, Role.ADAPTERS}),
    "reference_inputs": (Role.FINETUNED, Role.ALIGNED),
}


@register_method
class Resta(Method):
    info = MethodInfo(
        name="resta",
        summary="θ_F + γ(θ_A − θ_U): re-add the safety vector to the fine-tuned model",
        params=RestaParams,
        reference=_REFERENCE,
        **_INPUTS,  # type: ignore[arg-type]
    )

    def merge_tensor(self, inputs: TensorInputs, params: RestaParams, ctx: TensorContext) -> torch.Tensor:
        reference = Role.FINETUNED if inputs.has(Role.FINETUNED) else Role.ALIGNED

        def chunk(sl: slice) -> torch.Tensor:
            aligned = rows(inputs, Role.ALIGNED, 0, sl)
            safety = aligned - rows(inputs, Role.UNALIGNED, 0, sl)
            return _finetuned_rows(inputs, aligned, sl) + params.gamma * safety

        return map_rows(inputs, ctx, reference, chunk)


@register_method
class RestaDare(Method):
    info = MethodInfo(
        name="resta_dare",
        summary="θ_A + DARE(θ_F − θ_A, p) + γ(θ_A − θ_U); DARE seeded per tensor",
        params=RestaDareParams,
        reference=_REFERENCE,
        **_INPUTS,  # type: ignore[arg-type]
    )

    def merge_tensor(self, inputs: TensorInputs, params: RestaDareParams, ctx: TensorContext) -> torch.Tensor:
        aligned = inputs.aligned
        finetuned = _finetuned_rows(inputs, aligned, slice(None))
        sparse_task = ops.dare(finetuned - aligned, params.p, seed=ctx.rng_seed)
        return aligned + sparse_task + params.gamma * (aligned - inputs.unaligned)
