"""Safe LoRA (Hsu et al., 2024, arXiv:2405.16833): project LoRA updates onto the alignment subspace.

Per adapted weight: V = W_aligned − W_base, C = V Vᵀ / ‖V‖_F, ΔW = s·B A, ΔW' = C ΔW = s·(C B) A.
A layer is projected when cos(ΔW, ΔW') ≤ ``threshold`` — or, with ``num_proj_layers`` = k, for the
k layers of lowest similarity (ties at the k-th value included, as in the reference code). C B is
computed as V (Vᵀ B) / ‖V‖_F, never forming the out×out matrix. The adapter is trained over the
aligned model; the output is aligned + (projected) ΔW, or an adapter with B' = C B (output="adapter").

With ``aligned_adapter`` the fine-tune adapter instead *continues* the aligned adapter on the same
base (θ_F = base + s_F·B_F A_F, θ_A = base + s_A·B_A A_A), so its own ΔW would count the alignment
twice. The update projected is then the difference adapter of rank r_F + r_A with scaling 1:
A' = [A_F; A_A], B' = [s_F·B_F, −s_A·B_A], B'A' = θ_F − θ_A. A module only the aligned adapter adapts
is treated as one the fine-tune left alone (output θ_A there), not as the alignment being undone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import Field

from harness.core.checkpoints import LoraAdapter, join_lora_factors, lora_delta
from harness.core.errors import CheckpointError, ConfigError
from realign_methods._method import (
    AdapterParams,
    Method,
    MethodInfo,
    MethodParams,
    PrepareContext,
    Role,
    TensorContext,
    TensorInputs,
)
from realign_methods._registry import register_method
from realign_methods.methods._subspace import flat_cosine, project_onto_alignment


class SafeLoraParams(MethodParams):
    threshold: float = Field(0.35, ge=-1.0, le=1.0, description="project layers with cos(ΔW, CΔW) ≤ threshold")
    num_proj_layers: int | None = Field(
        None, ge=0, description="instead of the threshold: project the k lowest-similarity layers"
    )
    aligned_adapter: str | None = Field(
        None,
        description="the aligned LoRA adapter the fine-tune adapter continued from (both on the same base): "
        "the update projected is then the difference adapter θ_F − θ_A, and output='adapter' writes an "
        "adapter for the base model",
    )


@dataclass
class SafeLoraState:
    similarity: dict[str, float] = field(default_factory=dict)
    projected: set[str] = field(default_factory=set)
    aligned_adapter: LoraAdapter | None = None


def projected_b(aligned: torch.Tensor, base: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    """C·B with C = V Vᵀ / ‖V‖_F, V = aligned − base (all float32)."""
    return project_onto_alignment(aligned - base, lora_b)


def _aligned_factors(aligned: LoraAdapter, name: str) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    factors = aligned.factors(name)
    if factors is None:
        return None
    return factors[0], factors[1], aligned.scaling_for(name)


def update_factors(
    name: str, inputs: TensorInputs, aligned: LoraAdapter | None
) -> tuple[torch.Tensor, torch.Tensor, float] | None:
    """``(A, B, scaling)`` of the fine-tuning update of one weight, or None where there is none.

    Without an aligned adapter: the fine-tune adapter's own factors. With one: the difference
    adapter (scaling 1) where both adapt the weight, the fine-tune's factors where only it does,
    and None where only the aligned adapter does (the weight stays θ_A).
    """
    tuned = inputs.adapter_factors(0)
    if tuned is None or aligned is None:
        return tuned
    anchor = _aligned_factors(aligned, name)
    if anchor is None:
        return tuned
    a_f, b_f, s_f = tuned
    a_a, b_a, s_a = anchor
    if a_f.shape[1] != a_a.shape[1] or b_f.shape[0] != b_a.shape[0]:
        raise CheckpointError(
            f"aligned_adapter {aligned.path}: factors of '{name}' (A {list(a_a.shape)}, B {list(b_a.shape)}) "
            f"do not fit the fine-tune adapter {inputs.adapter(0).path}'s (A {list(a_f.shape)}, "
            f"B {list(b_f.shape)}); the two adapters must be on the same base model"
        )
    # θ_F − θ_A joined as CombinedAdapter joins; the weights only one adapter adapts keep the rules above
    joined_a, joined_b = join_lora_factors([(a_f, b_f, s_f), (a_a, b_a, -s_a)])
    return joined_a, joined_b, 1.0


def _load_aligned(params: SafeLoraParams, ctx: PrepareContext) -> LoraAdapter | None:
    """The aligned adapter, checked against the base model (the one both adapters apply to)."""
    if params.aligned_adapter is None:
        return None
    try:
        aligned = LoraAdapter.load(Path(params.aligned_adapter))
        aligned.check_base(ctx.readers[Role.BASE][0])
    except CheckpointError as exc:
        raise CheckpointError(f"safe_lora parameter aligned_adapter: {exc}") from None
    return aligned


@register_method
class SafeLora(Method):
    info = MethodInfo(
        name="safe_lora",
        summary="project each LoRA update onto the aligned−base subspace where it strays (cos ≤ threshold or k lowest)",
        params=SafeLoraParams,
        required=frozenset({Role.ALIGNED, Role.BASE, Role.ADAPTERS}),
        single=frozenset({Role.ADAPTERS}),
        reference=(
            "Hsu et al., Safe LoRA: the Silver Lining of Reducing Safety Risks when Finetuning Large "
            "Language Models, NeurIPS 2024, arXiv:2405.16833 (github.com/IBM/SafeLoRA)"
        ),
        reference_inputs=(Role.ALIGNED,),
        adapter_params=AdapterParams(aligned_adapter="aligned_adapter"),
    )
    supports_adapter_output = True

    def prepare(self, ctx: PrepareContext) -> SafeLoraState:
        params: SafeLoraParams = ctx.params  # type: ignore[assignment]
        adapter = ctx.adapters[0]
        state = SafeLoraState(aligned_adapter=_load_aligned(params, ctx))
        for name in adapter.modules():
            inputs = ctx.inputs(name)
            factors = update_factors(name, inputs, state.aligned_adapter)
            assert factors is not None
            lora_a, lora_b, _ = factors
            new_b = projected_b(inputs.aligned, inputs.base, lora_b)
            state.similarity[name] = flat_cosine(new_b @ lora_a, lora_b @ lora_a)
        if params.num_proj_layers is not None:
            ranked = sorted(state.similarity.values())
            cut = ranked[min(params.num_proj_layers, len(ranked)) - 1] if params.num_proj_layers > 0 else None
            state.projected = {n for n, c in state.similarity.items() if cut is not None and c <= cut}
        else:
            state.projected = {n for n, c in state.similarity.items() if c <= params.threshold}
        return state

    def merge_tensor(self, inputs: TensorInputs, params: SafeLoraParams, ctx: TensorContext) -> torch.Tensor:
        state: SafeLoraState = ctx.state
        name = ctx.name
        factors = update_factors(name, inputs, state.aligned_adapter)
        if factors is None:
            return inputs.raw(Role.ALIGNED)
        lora_a, lora_b, scaling = factors
        aligned = inputs.aligned
        if name in state.projected:
            lora_b = projected_b(aligned, inputs.base, lora_b)
        return aligned + lora_delta(lora_a, lora_b, scaling)

    def emit_adapter(self, ctx: PrepareContext, state: SafeLoraState) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``{weight: (A, B')}`` for ``save_adapter`` (the input adapter's config).

        Without an aligned adapter: B' = C B for projected layers (an adapter over the aligned model).
        With one, an adapter over the base like the input: unprojected layers keep the fine-tune's
        factors (θ_F); projected ones hold θ_A − base + C(θ_F − θ_A) = (I − C)·s_A B_A A_A + C·s_F B_F A_F
        as rank r_A + r_F factors, B divided by the scaling the saved config gives that rank.
        """
        adapter = ctx.adapters[0]
        aligned = state.aligned_adapter
        if aligned is not None:
            only_aligned = sorted(set(aligned.modules()) - set(adapter.modules()))
            if only_aligned:
                raise ConfigError(
                    f"safe_lora output='adapter' with aligned_adapter {aligned.path}: '{only_aligned[0]}' is adapted "
                    f"by the aligned adapter but not by the fine-tune adapter {adapter.path}, so the written adapter "
                    "could not keep θ_A there; use output='dense'"
                )
        out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for name, module in adapter.modules().items():
            inputs = ctx.inputs(name)
            factors = inputs.adapter_factors(0)
            assert factors is not None
            lora_a, lora_b, _ = factors
            anchor = _aligned_factors(aligned, name) if aligned is not None else None
            if name in state.projected and anchor is None:
                lora_b = projected_b(inputs.aligned, inputs.base, lora_b)
            elif name in state.projected and anchor is not None:
                update_factors(name, inputs, aligned)  # the shape check, with its error message
                a_a, b_a, s_a = anchor
                _, _, s_f = factors
                aligned_b = b_a * s_a
                kept = aligned_b - projected_b(inputs.aligned, inputs.base, aligned_b)
                tuned = projected_b(inputs.aligned, inputs.base, lora_b * s_f)
                rank = a_a.shape[0] + lora_a.shape[0]
                saved_scaling = module.alpha / (math.sqrt(rank) if adapter.config.get("use_rslora") else rank)
                lora_a, lora_b = torch.cat([a_a, lora_a], dim=0), torch.cat([kept, tuned], dim=1) / saved_scaling
            out[name] = (lora_a, lora_b)
        return out
