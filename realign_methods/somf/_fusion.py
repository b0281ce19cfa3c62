"""SOMF's fusion rules: named presets over the generic ``realign_methods.ops.fuse_deltas``.

Defaults follow the paper: task arithmetic λ=0.3; TIES top-20 % with disjoint **sum**, λ=0.4
(``ties``; ``ties_mean`` is standard TIES with the disjoint mean); weight averaging; DARE p=0.2,
λ=0.3. DARE's drops are the engine's seeded masks (``ops.dare(..., seed=tensor_seed(seed, name), task=i)``,
as ``TensorContext.rng_seed``), so SOMF with an all-ones mask reproduces the generic rule tensor for
tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from harness.core.errors import ConfigError, name_unknown
from realign_methods._method import tensor_seed
from realign_methods.ops import fuse_deltas
from realign_methods.somf._mask import apply_mask, draw_mask
from realign_methods.somf._vectors import TaskVectors

# fusion name -> (generic rule of realign_methods.ops, its SOMF defaults)
FUSIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "task_arithmetic": ("task_arithmetic", {"lam": 0.3}),
    "ties": ("ties", {"density": 0.2, "lam": 0.4, "reduce": "sum"}),
    "ties_mean": ("ties", {"density": 0.2, "lam": 0.4, "reduce": "mean"}),
    "weight_average": ("weight_average", {}),
    "dare": ("dare", {"p": 0.2, "lam": 0.3}),
}
# What a user may override per fusion, with the allowed range (checked before anything loads).
_OVERRIDABLE = {"lam": (None, None), "density": (0.0, 1.0), "p": (0.0, 1.0)}


def check_fusion(fusion: str) -> str:
    if fusion not in FUSIONS:
        raise ConfigError(
            f"somf: unknown fusion rule {name_unknown([fusion], list(FUSIONS), cutoff=0.5)} (known: {', '.join(FUSIONS)})"
        )
    return fusion


def fusion_params(fusion: str, overrides: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The rule's parameters: SOMF defaults, then ``overrides`` (keys the rule accepts, in range)."""
    defaults = FUSIONS[check_fusion(fusion)][1]
    params = dict(defaults)
    allowed = sorted(k for k in defaults if k in _OVERRIDABLE)
    for key, value in (overrides or {}).items():
        if key not in allowed:
            raise ConfigError(
                f"somf fusion {fusion!r}: parameter {key!r} is not used (accepted: {', '.join(allowed) or 'none'})"
            )
        low, high = _OVERRIDABLE[key]
        if low is not None and high is not None and not low <= float(value) <= high:
            raise ConfigError(f"somf fusion {fusion!r}: {key} = {value} is out of range [{low}, {high}]")
        if key == "p" and float(value) >= 1:
            raise ConfigError(f"somf fusion {fusion!r}: p = {value} must be below 1 (it is a drop probability)")
        params[key] = float(value)
    return params


def fuse(
    fusion: str,
    overrides: Mapping[str, float] | None,
    deltas: Sequence[Mapping[str, torch.Tensor]],
    *,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Fused delta per tensor name across the task vectors (differentiable in the deltas)."""
    rule, _ = FUSIONS[check_fusion(fusion)]
    params = fusion_params(fusion, overrides)
    fused = {}
    for name in deltas[0]:
        fused[name] = fuse_deltas(rule, [d[name] for d in deltas], params, seed=tensor_seed(seed, name))
    return fused


def masked_fused_deltas(
    vectors: TaskVectors,
    logits: Mapping[str, torch.Tensor] | None,
    *,
    fusion: str,
    overrides: Mapping[str, float] | None,
    mode: str,
    temperature: float = 0.5,
    normalize: bool = True,
    threshold: float = 0.5,
    mask_seed: int = 0,
    fusion_seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Mask every task vector with one shared mask, then fuse them: the fused delta per mask key.

    ``mode`` is ``concrete`` (training), ``soft``/``sample``/``threshold`` (inference), ``unmasked``
    (the generic rule on the raw task vectors) or ``aligned`` (no task vector at all). Each tensor's
    mask noise comes from its own generator seeded from (mask_seed, name), so results do not depend
    on tensor order.
    """
    if mode == "aligned":
        return {k: torch.zeros_like(v) for k, v in vectors.deltas[0].items()}
    masked: list[dict[str, torch.Tensor]] = [dict(d) for d in vectors.deltas]
    if mode != "unmasked":
        if logits is None:
            raise ConfigError(f"somf mask mode {mode!r} needs mask logits")
        for name in vectors.deltas[0]:
            generator = torch.Generator().manual_seed(tensor_seed(mask_seed, "somf-mask/" + name))
            mask = draw_mask(logits[name], mode, temperature=temperature, threshold=threshold, generator=generator)  # type: ignore[arg-type]
            for per_task in masked:
                per_task[name] = apply_mask(per_task[name], mask, normalize=normalize)
    return fuse(fusion, overrides, masked, seed=fusion_seed)


def masked_fused_weights(
    vectors: TaskVectors,
    logits: Mapping[str, torch.Tensor] | None,
    *,
    base: Callable[[str], torch.Tensor],
    **options: Any,
) -> dict[str, torch.Tensor]:
    """Realigned weights (``base(name)`` + fused masked task vectors); options as masked_fused_deltas."""
    return vectors.weights(masked_fused_deltas(vectors, logits, **options), base)
