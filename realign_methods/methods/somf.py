"""SOMF as a registered method: trains (or reuses, by content hash) the safety mask in ``prepare``,
then writes each realigned tensor in ``merge_tensor``.

``somf`` takes a ``fusion`` parameter; ``somf_ta``, ``somf_ties``, ``somf_avg`` and ``somf_dare``
are the same method with that fusion preset (separate names so leaderboard rows read well).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, create_model

from harness.core.checkpoints import AdaptedReader, CheckpointReader
from harness.core.errors import ConfigError
from harness.core.paths import cache_dir
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
from realign_methods.somf import (
    FusionName,
    SomfTrainConfig,
    SomfTrainingFields,
    fused_deltas_from_logits,
    load_preference_data,
    load_task_vectors,
    make_config,
    read_mask,
    train_cache_key,
    train_mask,
)

_REFERENCE = (
    "Yi et al. 2024, 'A safety realignment framework via subspace-oriented model fusion for large language "
    "models' (arXiv 2405.09055); reference code xinykou/safety_realignment"
)
_SUMMARY = (
    "Safety-subspace masks over task vectors: one logit per task-vector parameter (binary Concrete, T=0.5, "
    "δ⊙m/mean(m)), trained with DPO (β=0.1) on safety preference pairs (default: SOMF's PKU-SafeRLHF pairs), "
    "then the masked task vectors are fused with the chosen rule onto the aligned model. Mask memory: "
    "granularity=element costs 4 B/parameter of the task vectors (+8 B/parameter AdamW state while training); "
    "row costs 4 B per output row; tensor one logit per tensor (use normalize=false). In the 'lora' setting "
    "the task vectors are LoRA factor differences (few parameters); 'merged'/'full' mask dense weights."
)


class SomfParams(MethodParams, SomfTrainingFields):
    """The training knobs (``SomfTrainingFields``, shared with ``SomfTrainConfig``) plus what only the method
    decides: the task-vector setting, fusion overrides, the inference mask and where the inputs come from."""

    setting: Literal["auto", "lora", "merged", "full"] = Field(
        default="auto",
        description="task-vector space: lora = LoRA factor differences (needs base + aligned_adapter), merged = "
        "s·B·A of adapters on the aligned model, full = θ_F − θ_A; auto = merged with adapters, else full",
    )
    lam: float | None = Field(default=None, description="fusion λ (default 0.3 TA/DARE, 0.4 TIES)")
    density: float | None = Field(default=None, gt=0.0, le=1.0, description="TIES kept fraction (default 0.2)")
    p: float | None = Field(default=None, ge=0.0, lt=1.0, description="DARE drop rate (default 0.2)")
    mask_mode: Literal["soft", "sample", "threshold"] = Field(
        default="sample", description="mask at inference: σ(logit) | seeded binary sample (paper) | σ > threshold"
    )
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0, description="for mask_mode=threshold")
    aligned_adapter: str | None = Field(default=None, description="setting lora: the aligned LoRA adapter (A₀, B₀)")
    preference_file: str | None = Field(
        default=None, description="chosen/rejected JSONL (or use input preference_data)"
    )

    def train_config(self, seed: int) -> SomfTrainConfig:
        """The training config these parameters stand for (micro-batches are capped at the batch size)."""
        shared = self.model_dump(include=set(SomfTrainingFields.model_fields))
        shared["micro_batch_size"] = min(self.micro_batch_size, self.batch_size)
        overrides = {k: v for k, v in {"lam": self.lam, "density": self.density, "p": self.p}.items() if v is not None}
        return make_config(**shared, fusion_params=overrides, seed=seed)


@dataclass
class _SomfState:
    weights: dict[str, torch.Tensor]
    reference_role: Role
    mask_dir: Path
    adapter_factors: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None  # lora setting only


def _paths(ctx: PrepareContext, role: str) -> list[Path]:
    for reader in ctx.readers.get(role, []):
        if isinstance(reader, AdaptedReader):  # SOMF re-reads its inputs by directory, which would be the base
            raise ConfigError(
                f"somf reads its models as directories, but {role} {reader.adapter.path} is a LoRA adapter folder: "
                "pass its dense copy (realign models merge-adapter), or use setting lora "
                "(--base BASE -p aligned_adapter=ADAPTER --adapter ...)"
            )
    return [Path(reader.path) for reader in ctx.readers.get(role, [])]


def _adapter_paths(ctx: PrepareContext) -> list[Path]:
    paths = []
    for adapter in ctx.adapters:
        path = getattr(adapter, "path", adapter)
        paths.append(Path(path))
    return paths


class Somf(Method):
    supports_adapter_output: ClassVar[bool] = True
    info: ClassVar[MethodInfo] = MethodInfo(
        name="somf",
        summary=_SUMMARY,
        params=SomfParams,
        one_of=(frozenset({Role.ALIGNED, Role.BASE}), frozenset({Role.FINETUNED, Role.ADAPTERS})),
        optional=frozenset({Role.PREFERENCE_DATA}),
        data_free=False,
        reference=_REFERENCE,
        reference_inputs=(Role.ALIGNED, Role.BASE),
        single=frozenset({Role.ALIGNED, Role.BASE}),
        # "full" reads the fine-tune's dense weights; the others its LoRA adapter
        adapter_params=AdapterParams(
            aligned_adapter="aligned_adapter", setting="setting", adapter_values=frozenset({"lora", "merged", "auto"})
        ),
    )

    def prepare(self, ctx: PrepareContext) -> _SomfState:
        params = ctx.params
        assert isinstance(params, SomfParams)
        adapters = _adapter_paths(ctx)
        setting = params.setting
        if setting == "auto":
            setting = "merged" if adapters else "full"
        aligned, base, finetuned = _paths(ctx, Role.ALIGNED), _paths(ctx, Role.BASE), _paths(ctx, Role.FINETUNED)
        if setting == "full" and adapters and not finetuned:
            raise ConfigError(
                "somf setting 'full' needs dense fine-tuned models; with adapters use setting merged or lora"
            )
        vectors = load_task_vectors(
            setting,
            aligned=aligned[0] if aligned else None,
            base=base[0] if base else None,
            finetuned=finetuned if setting == "full" else (),
            adapters=adapters,
            aligned_adapter=params.aligned_adapter,
        )
        config = params.train_config(ctx.seed)
        preference = ctx.data.get(Role.PREFERENCE_DATA) or params.preference_file
        data = load_preference_data(
            preference, val_fraction=config.val_fraction, seed=config.seed, max_pairs=config.max_pairs
        )
        key = train_cache_key(vectors, data.sha256, config)
        mask_dir = train_mask(vectors, config, cache_dir() / "somf" / key, preference_file=data.path)
        logits, _ = read_mask(mask_dir)
        fused = fused_deltas_from_logits(
            vectors, logits, config, mode=params.mask_mode, seed=ctx.seed, threshold=params.threshold
        )
        with CheckpointReader(vectors.model_dir) as reader:
            weights = vectors.weights(fused, lambda name: reader.get(name).float())
        factors = vectors.adapter_factors(fused) if setting == "lora" else None
        return _SomfState(weights, Role.BASE if setting == "lora" else Role.ALIGNED, mask_dir, factors)

    def emit_adapter(self, ctx: PrepareContext, state: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Setting lora: the realigned adapter (A₀ + fused masked τ_A, B₀ + fused masked τ_B)."""
        assert isinstance(state, _SomfState)
        if state.adapter_factors is None:
            raise ConfigError("somf writes a LoRA adapter only in setting 'lora' (base + aligned_adapter + adapters)")
        return state.adapter_factors

    def merge_tensor(self, inputs: TensorInputs, params: Any, ctx: TensorContext) -> torch.Tensor:
        state = ctx.state
        assert isinstance(state, _SomfState)
        if ctx.name in state.weights:
            return state.weights[ctx.name]
        role = (
            state.reference_role
            if inputs.has(state.reference_role)
            else (Role.ALIGNED if inputs.has(Role.ALIGNED) else Role.BASE)
        )
        return inputs.raw(role)


def _preset(name: str, fusion: str) -> type[Somf]:
    params = create_model(
        f"SomfParams_{fusion}",
        __base__=SomfParams,
        fusion=(FusionName, Field(default=fusion, description="fusion rule of the masked task vectors")),
    )
    info = MethodInfo(
        name=name,
        summary=f"SOMF with fusion={fusion} (preset of 'somf'). " + _SUMMARY,
        params=params,
        one_of=Somf.info.one_of,
        optional=Somf.info.optional,
        data_free=False,
        reference=_REFERENCE,
        reference_inputs=Somf.info.reference_inputs,
        single=Somf.info.single,
        adapter_params=Somf.info.adapter_params,
    )
    return type(f"Somf_{fusion}", (Somf,), {"info": info})


register_method(Somf)
for _name, _fusion in (
    ("somf_ta", "task_arithmetic"),
    ("somf_ties", "ties"),
    ("somf_avg", "weight_average"),
    ("somf_dare", "dare"),
):
    register_method(_preset(_name, _fusion))
