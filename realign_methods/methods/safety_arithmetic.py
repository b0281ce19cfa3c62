"""Safety Arithmetic (Hazra et al., 2024, arXiv:2406.11801): harm-direction removal in the weights,
then in-context safety vectors (ICV) in the activations.

Harm-direction removal: τ_H = θ_H − θ_0, the change a harmful fine-tune made to the model it started
from. Here θ_H is the ``unaligned`` input, which the harness builds by fine-tuning θ_A on harmful
answers, so θ_0 = θ_A and τ_H = θ_U − θ_A. Only its top-k entries by magnitude are kept (``density``,
per tensor) and θ' = θ_F − λ·τ_H^k.

ICV (``icv_strength`` α > 0): θ' runs on exemplar pairs — a harmful prompt with a safe answer and the
same prompt with a harmful answer (SOMF's PKU-SafeRLHF pairs by default: response[0] safe,
response[1] unsafe; PKU-SafeRLHF test prompts, disjoint from every benchmark this project scores).
Each decoder layer's last-token output state gives D = h_safe − h_unsafe; the vector is
mean(D) + the first principal direction of D (ICV's construction), and α·v_l is added to layer l's
MLP output. That addition is *folded into the checkpoint*: ``mlp_bias: true`` in config.json,
``down_proj.bias = α·v_l`` and zero ``gate_proj``/``up_proj`` biases, so vLLM and HF run the same
steering with no hooks; :func:`realign_methods.methods._icv.steering_hooks` is the hook form (tested
equal). Unlike the ICV reference code the steered state is not renormalised to its old norm: a norm
rescale cannot be folded into a bias.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from harness.core.errors import CheckpointError, ConfigError
from realign_methods import _ops as ops
from realign_methods._method import (
    Method,
    MethodInfo,
    MethodParams,
    PrepareContext,
    Role,
    TensorContext,
    TensorInputs,
)
from realign_methods._registry import register_method
from realign_methods.methods._common import finetuned_weight
from realign_methods.methods._icv import (
    exemplar_text,
    folded_biases,
    icv_direction,
    last_token_states,
    mlp_layers,
)
from realign_methods.somf._data import default_preference_file, load_pairs

_REFERENCE = (
    "Hazra et al., Safety Arithmetic: A Framework for Test-time Safety Alignment of Language Models by "
    "Steering Parameters and Activations, EMNLP 2024, arXiv:2406.11801 (github.com/declare-lab/safety-arithmetic)"
)


class SafetyArithmeticParams(MethodParams):
    lam: float = Field(0.5, ge=0.0, le=10.0, description="λ: strength of the harm-vector subtraction")
    density: float = Field(0.1, gt=0.0, le=1.0, description="k: kept fraction of τ_H by magnitude, per tensor")
    icv_strength: float = Field(0.1, ge=0.0, le=10.0, description="α of the in-context safety vector (0: weights only)")
    icv_examples: int = Field(32, ge=1, le=4096, description="exemplar pairs (seeded sample) for the ICV")
    icv_max_length: int = Field(128, ge=8, le=4096, description="tokens per exemplar")
    icv_data: str | None = Field(
        None,
        description="JSON/JSONL pairs (prompt + a two-answer response list, safe one first, or chosen/rejected); default: "
        "the preference_data input, else SOMF's PKU-SafeRLHF pairs in the data dir",
    )


@dataclass
class _IcvState:
    vectors: torch.Tensor | None  # [layers, hidden], already × α
    existing_bias: bool  # the checkpoint has MLP biases already: add to them instead of creating them
    shapes: dict[str, torch.Size]
    bias_dtype: torch.dtype


def remove_harm_direction(
    finetuned: torch.Tensor, aligned: torch.Tensor, unaligned: torch.Tensor, lam: float, density: float
) -> torch.Tensor:
    """θ_F − λ·topk(θ_U − θ_A)."""
    return finetuned - lam * ops.magnitude_prune(unaligned - aligned, density)


def _exemplar_pairs(params: SafetyArithmeticParams, ctx: PrepareContext) -> list[tuple[str, str, str]]:
    source = (
        Path(params.icv_data) if params.icv_data else ctx.data.get(Role.PREFERENCE_DATA) or default_preference_file()
    )
    pairs = load_pairs(source)
    if not pairs:
        raise ConfigError(f"safety_arithmetic: {source} holds no exemplar pairs")
    picked = random.Random(ctx.seed).sample(pairs, min(params.icv_examples, len(pairs)))
    return [(p.prompt, p.chosen, p.rejected) for p in picked]


def _hdr_model(ctx: PrepareContext, params: SafetyArithmeticParams, reference: Any) -> tuple[Any, Any]:
    """θ' (after harm-direction removal) as an HF model, with the reference input's tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(reference.root)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {}
    for name in ctx.names:
        inputs = ctx.inputs(name)
        raw = inputs.raw(Role.ALIGNED)
        state[name] = (
            remove_harm_direction(
                finetuned_weight(inputs), inputs.aligned, inputs.unaligned, params.lam, params.density
            )
            if raw.is_floating_point()
            else raw
        )
        inputs.release()
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"safety_arithmetic: the checkpoint at {reference.root} does not fit its config.json "
            f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})"
        )
    model.tie_weights()
    return model.eval(), AutoTokenizer.from_pretrained(reference.root)


@register_method
class SafetyArithmetic(Method):
    info = MethodInfo(
        name="safety_arithmetic",
        summary=(
            "arXiv:2406.11801 — "
            "harm-direction removal θ' = θ_F − λ·topk(τ_H), τ_H = θ_U − θ_A; then the in-context safety vector "
            "α·v_l (from θ' on safe vs harmful answers to harmful prompts; data: safety preference pairs, "
            "default icv_examples seeded pairs of SOMF's PKU-SafeRLHF file "
            "(shared/data/pku_saferlhf_realign_somf, PKU-SafeRLHF test-split prompts, in no benchmark scored here)) "
            "folded into MLP biases (mlp_bias: true, down_proj.bias = α·v_l) so vLLM runs it too; hook form "
            "in _icv.steering_hooks. Settings: dense fine-tunes and LoRA adapters; ICV needs a Llama-style model"
        ),
        params=SafetyArithmeticParams,
        required=frozenset({Role.ALIGNED, Role.UNALIGNED}),
        one_of=(frozenset({Role.FINETUNED, Role.ADAPTERS}),),
        optional=frozenset({Role.PREFERENCE_DATA}),
        single=frozenset({Role.FINETUNED, Role.ADAPTERS}),
        data_free=False,
        reference=_REFERENCE,
        reference_inputs=(Role.FINETUNED, Role.ALIGNED),
    )

    def prepare(self, ctx: PrepareContext) -> _IcvState:
        params: SafetyArithmeticParams = ctx.params  # type: ignore[assignment]
        reference = (ctx.readers.get(Role.FINETUNED) or ctx.readers[Role.ALIGNED])[0]
        if params.icv_strength == 0:
            return _IcvState(None, False, {}, torch.float32)
        layers = mlp_layers(ctx.names)
        if not layers:
            raise ConfigError(
                f"safety_arithmetic: ICV folds into Llama MLP biases, but {reference.path} has no "
                "'model.layers.N.mlp.down_proj.weight' tensors; set icv_strength=0 for harm-direction removal only"
            )
        pairs = _exemplar_pairs(params, ctx)  # data errors before the forward passes
        existing = f"model.layers.{min(layers)}.mlp.down_proj.bias" in ctx.names
        model, tokenizer = _hdr_model(ctx, params, reference)
        safe = last_token_states(
            model, tokenizer, [exemplar_text(tokenizer, p, s) for p, s, _ in pairs], params.icv_max_length
        )
        unsafe = last_token_states(
            model, tokenizer, [exemplar_text(tokenizer, p, u) for p, _, u in pairs], params.icv_max_length
        )
        vectors = params.icv_strength * icv_direction(safe, unsafe)
        dtype = reference.dtype(layers[min(layers)])
        return _IcvState(vectors, existing, {n: model.get_parameter(n).shape for n in layers.values()}, dtype)

    def merge_tensor(self, inputs: TensorInputs, params: SafetyArithmeticParams, ctx: TensorContext) -> torch.Tensor:
        state: _IcvState = ctx.state
        weight = remove_harm_direction(
            finetuned_weight(inputs), inputs.aligned, inputs.unaligned, params.lam, params.density
        )
        if state.vectors is not None and state.existing_bias and ctx.name.endswith(".mlp.down_proj.bias"):
            return weight + state.vectors[int(ctx.name.split(".")[2])]
        return weight

    def extra_tensors(self, ctx: PrepareContext, state: _IcvState) -> dict[str, torch.Tensor]:
        if state.vectors is None or state.existing_bias:
            return {}
        return folded_biases(state.vectors, state.shapes, state.bias_dtype)

    def config_updates(self, ctx: PrepareContext, state: _IcvState) -> dict[str, Any]:
        return {} if state.vectors is None else {"mlp_bias": True}
