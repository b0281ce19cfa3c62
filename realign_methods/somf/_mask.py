"""SOMF's mask: one logit per task-vector parameter (or per row / per tensor), binary-Concrete relaxed.

Training draws a relaxed-Bernoulli (binary Concrete) sample ``m = σ((logit + log u − log(1−u)) / T)``
(the same formula as ``torch.distributions.RelaxedBernoulli.rsample``, written out so a seeded
``torch.Generator`` controls it). A task-vector tensor ``δ`` is masked as ``δ ⊙ m / mean(m)`` (the
reference code's rescaling, switchable). At inference the mask is one of three kinds:

* ``soft``: the expected mask ``σ(logit)``;
* ``sample``: a binary sample ``1[relaxed sample > 0.5]`` (= Bernoulli(σ(logit))) drawn from a fixed
  seed, which is what the authors' code does;
* ``threshold``: the deterministic binary mask ``1[σ(logit) > threshold]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal, get_args

import torch

from harness.core.errors import CheckpointError, ConfigError

Granularity = Literal["element", "row", "tensor"]
InferenceMode = Literal["soft", "sample", "threshold"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)
INFERENCE_MODES: tuple[str, ...] = get_args(InferenceMode)

# Below this mean a mask is "all off": the delta becomes zero instead of 0/0 (the reference code
# would produce NaN there; zero is the limit the user asked for with logits -> -inf).
_MIN_MASK_MEAN = 1e-12

# Memory each granularity costs, shown by `realign methods show somf`.
GRANULARITY_COST = {
    "element": "one fp32 logit per task-vector parameter: 4 bytes x parameters for the logits, "
    "+8 bytes x parameters of AdamW state while training (the paper's choice)",
    "row": "one logit per output row (dim 0) of each tensor: 4 bytes x rows (+8 bytes x rows of AdamW "
    "state); 1-D tensors get one logit",
    "tensor": "one logit per tensor: negligible memory; use normalize=False, because δ·m/mean(m) = δ "
    "for a single scalar m",
}


def check_granularity(granularity: str) -> Granularity:
    if granularity not in GRANULARITIES:
        raise ConfigError(f"somf granularity {granularity!r} is unknown (expected one of {', '.join(GRANULARITIES)})")
    return granularity  # type: ignore[return-value]


def logit_shape(shape: Iterable[int], granularity: str) -> tuple[int, ...]:
    """Shape of the logits that mask a tensor of ``shape`` (broadcastable against it)."""
    shape = tuple(shape)
    granularity = check_granularity(granularity)
    if granularity == "element":
        return shape
    if granularity == "row" and len(shape) >= 2:
        return (shape[0],) + (1,) * (len(shape) - 1)
    return (1,) * max(len(shape), 1)


def init_logits(
    shapes: Mapping[str, Iterable[int]], granularity: str = "element", init: float = 0.0
) -> dict[str, torch.Tensor]:
    """Fresh trainable fp32 logits (init 0 ⇒ σ = 0.5, as in the paper's code)."""
    logits = {}
    for name, shape in shapes.items():
        logits[name] = torch.full(logit_shape(shape, granularity), float(init), dtype=torch.float32)
        logits[name].requires_grad_(True)
    return logits


def check_mask_shapes(
    logits: Mapping[str, torch.Tensor], shapes: Mapping[str, Iterable[int]], granularity: str, source: str = "mask"
) -> None:
    """Raise CheckpointError naming the first tensor whose logits do not fit the task vectors."""
    missing = sorted(set(shapes) - set(logits))
    extra = sorted(set(logits) - set(shapes))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no logits for task-vector tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"logits for tensor(s) not in the task vectors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        raise CheckpointError(f"{source}: mask does not match the task vectors: {'; '.join(parts)}")
    for name, shape in shapes.items():
        expected = logit_shape(shape, granularity)
        if tuple(logits[name].shape) != expected:
            raise CheckpointError(
                f"{source}: mask logits for tensor {name!r} have shape {tuple(logits[name].shape)}, expected "
                f"{expected} ({granularity} granularity over a task vector of shape {tuple(shape)})"
            )


def concrete_sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Differentiable binary-Concrete sample in (0, 1)."""
    tiny = torch.finfo(torch.float32).tiny
    uniform = torch.rand(logits.shape, generator=generator, dtype=torch.float32).clamp(tiny, 1.0 - 1e-7)
    noise = uniform.log() - torch.log1p(-uniform)
    return torch.sigmoid((logits + noise) / temperature)


def draw_mask(
    logits: torch.Tensor,
    mode: Literal["concrete", "soft", "sample", "threshold"],
    *,
    temperature: float = 0.5,
    threshold: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One mask tensor: ``concrete`` while training, one of INFERENCE_MODES at inference."""
    if mode == "concrete":
        return concrete_sample(logits, temperature, generator)
    if mode == "soft":
        return torch.sigmoid(logits)
    if mode == "sample":
        # A relaxed sample is > 0.5 exactly when logit + logistic noise > 0: a Bernoulli(σ(logit)) draw.
        return (concrete_sample(logits.detach(), temperature, generator) > 0.5).to(torch.float32)
    if mode == "threshold":
        return (torch.sigmoid(logits.detach()) > threshold).to(torch.float32)
    raise ConfigError(f"somf mask mode {mode!r} is unknown (expected concrete or one of {', '.join(INFERENCE_MODES)})")


def apply_mask(delta: torch.Tensor, mask: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
    """``δ ⊙ m / mean(m)`` (or ``δ ⊙ m`` when ``normalize`` is False); ``mask`` broadcasts over ``delta``.

    The mean is over the mask's own entries, which equals the mean of the broadcast mask because
    every row/tensor block has the same size.
    """
    masked = delta * mask
    if not normalize:
        return masked
    mean = mask.mean()
    safe = torch.where(mean > _MIN_MASK_MEAN, mean, torch.ones_like(mean))
    return torch.where(mean > _MIN_MASK_MEAN, masked / safe, torch.zeros_like(masked))


def mask_parameter_count(shapes: Mapping[str, Iterable[int]], granularity: str) -> int:
    return sum(math.prod(logit_shape(shape, granularity)) for shape in shapes.values())


def mask_density(logits: Mapping[str, torch.Tensor], shapes: Mapping[str, Iterable[int]]) -> float:
    """Expected fraction of task-vector entries kept (σ(logit) weighted by how many entries each covers)."""
    kept = 0.0
    total = 0
    for name, shape in shapes.items():
        count = math.prod(tuple(shape))
        kept += float(torch.sigmoid(logits[name].detach()).mean()) * count
        total += count
    return kept / total if total else 0.0
