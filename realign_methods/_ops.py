"""Per-tensor merge arithmetic: task vectors, magnitude pruning, DARE, TIES and a rule dispatcher.

Every function is pure and differentiable: inputs are never modified in place, masks are built
without gradient and applied by multiplication, so gradients flow to the (masked) deltas — SOMF
trains mask logits through :func:`fuse_deltas`. Arithmetic is float32 (inputs are upcast).

Conventions follow ``peft.utils.merge_utils`` so results agree with it on the same tensors:
``k = int(density * numel)`` entries kept by magnitude, sign election by summed (``"total"``)
mass of the trimmed deltas with ties going to +, per-task weights applied after the election,
disjoint mean dividing by the number of agreeing (non-zero) entries, and DARE's Bernoulli keep
mask drawn with ``torch.bernoulli(full_like(delta, 1 - p), generator=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from harness.core.errors import ConfigError, name_unknown

Reduce = Literal["mean", "sum"]
#: elements per chunk of the fused kernels and of the seeded DARE masks: 1 MB of float32 (L2-sized)
CHUNK = 1 << 18
Sparsify = Literal["none", "magnitude", "dare"]


class FusionOptions(NamedTuple):
    """A fusion rule as options of generalized task arithmetic (as ``methods/fusion.py``'s variants)."""

    sparsify: Sparsify = "none"
    sign_consensus: bool = False
    #: without consensus: "sum" is Σ λ·w_i·δ_i, "mean" the weighted mean Σ w_i·δ_i / Σ w_i
    reduce: Reduce = "sum"


#: the differentiable rules of :func:`fuse_deltas` (SOMF trains through them): options, accepted params
FUSION_RULE_OPTIONS: dict[str, tuple[FusionOptions, frozenset[str]]] = {
    "task_arithmetic": (FusionOptions(), frozenset({"lam", "weights"})),
    "weight_average": (FusionOptions(reduce="mean"), frozenset({"weights"})),
    "ties": (FusionOptions("magnitude", True), frozenset({"density", "lam", "reduce", "weights"})),
    "dare": (FusionOptions("dare"), frozenset({"p", "lam", "weights"})),
    "magnitude_prune": (FusionOptions("magnitude"), frozenset({"density", "lam", "weights"})),
    "dare_ties": (FusionOptions("dare", True), frozenset({"p", "lam", "reduce", "weights"})),
}
FUSION_RULES = tuple(FUSION_RULE_OPTIONS)


def _f32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.float32 else tensor.float()


def _task_weights(count: int, lam: float, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [float(lam)] * count
    if len(weights) != count:
        raise ConfigError(f"weights: expected one weight per task vector ({count}), got {len(weights)}")
    return [float(lam) * float(w) for w in weights]


def _check_fraction(name: str, value: float, *, upper_open: bool) -> None:
    bad = value < 0 or (value >= 1 if upper_open else value > 1)
    if bad:
        bound = "[0, 1)" if upper_open else "[0, 1]"
        raise ConfigError(f"{name} must be in {bound}, got {value}")


def task_arithmetic(
    base: torch.Tensor, deltas: Sequence[torch.Tensor], lam: float = 1.0, weights: Sequence[float] | None = None
) -> torch.Tensor:
    """``base + Σ lam·w_i·δ_i`` (Ilharco et al., 2023)."""
    return _f32(base) + weighted_sum(deltas, _task_weights(len(deltas), lam, weights))


def weighted_sum(deltas: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """``Σ w_i·δ_i``, accumulated without stacking (one extra tensor of memory)."""
    if not deltas:
        raise ConfigError("at least one task vector is required")
    total = _f32(deltas[0]) * weights[0]
    for delta, weight in zip(deltas[1:], weights[1:], strict=True):
        total = total + _f32(delta) * weight
    return total


def weight_average(tensors: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """Weighted mean ``Σ w_i·x_i / Σ w_i`` (uniform when ``weights`` is None) — of models or of deltas."""
    ws = _task_weights(len(tensors), 1.0, weights)
    norm = sum(ws)
    if norm == 0:
        raise ConfigError("weight_average: the weights sum to 0")
    return weighted_sum(tensors, [w / norm for w in ws])


#: elements per sub-chunk of the no-grad fast paths: small enough that temporaries stay in cache
_FAST_CHUNK = 1 << 18
_MAGNITUDE_BITS = 0x7FFFFFFF  # float32 bit pattern without the sign: ordered like |x| for finite x
_BUCKET_SHIFT = 16  # radix-select buckets: sign-less exponent + 7 mantissa bits (32768 buckets)


def magnitude_threshold(delta: torch.Tensor, density: float) -> float | None:
    """The magnitude of the ``k = int(density·numel)``-th largest entry (None: keep everything).

    Exact, and without a sort: a radix select over the float32 bit patterns (non-negative floats
    order like their bits) counts entries per 16-bit bucket, finds the bucket holding the k-th
    largest, and runs ``kthvalue`` over that bucket's few entries only. Entries whose magnitude
    equals the threshold are all kept, so the kept set does not depend on tie-breaking order.
    Equals :func:`magnitude_threshold_reference` exactly.
    """
    _check_fraction("density", density, upper_open=False)
    if density >= 1:
        return None
    k = int(density * delta.numel())
    if k == 0:
        return float("inf")
    with torch.no_grad():
        flat = _f32(delta.detach()).reshape(-1).contiguous()
        if not bool(torch.isfinite(flat).all()):
            return magnitude_threshold_reference(flat, density)  # NaN bit patterns do not order like values
        chunks = flat.split(_FAST_CHUNK * 16)
        histogram = torch.zeros(1 << (31 - _BUCKET_SHIFT), dtype=torch.int64, device=flat.device)
        for chunk in chunks:
            buckets = (chunk.view(torch.int32) & _MAGNITUDE_BITS) >> _BUCKET_SHIFT
            histogram += torch.bincount(buckets, minlength=histogram.numel())
        at_or_above = histogram.flip(0).cumsum(0).flip(0)  # entries in this bucket or a higher one
        bucket = int((at_or_above >= k).nonzero()[-1])
        rank = k - int(at_or_above[bucket] - histogram[bucket])  # rank of the threshold inside its bucket
        candidates = torch.cat(
            [chunk[((chunk.view(torch.int32) & _MAGNITUDE_BITS) >> _BUCKET_SHIFT) == bucket] for chunk in chunks]
        ).abs_()
        return float(candidates.kthvalue(candidates.numel() - rank + 1).values)


def magnitude_threshold_reference(delta: torch.Tensor, density: float) -> float | None:
    """:func:`magnitude_threshold` by a plain ``kthvalue`` over all magnitudes (the slow reference)."""
    _check_fraction("density", density, upper_open=False)
    if density >= 1:
        return None
    k = int(density * delta.numel())
    if k == 0:
        return float("inf")
    magnitudes = delta.detach().reshape(-1).abs()
    return float(magnitudes.kthvalue(magnitudes.numel() - k + 1).values)


def apply_threshold(delta: torch.Tensor, threshold: float | None) -> torch.Tensor:
    """Zero the entries of ``delta`` whose magnitude is below ``threshold`` (None keeps all)."""
    delta = _f32(delta)
    if threshold is None:
        return delta
    keep = delta.detach().abs() >= threshold
    return delta * keep


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``density`` fraction of entries with the largest magnitude, zero the rest (TIES's trim)."""
    return apply_threshold(delta, magnitude_threshold(delta, density))


def dare(
    delta: torch.Tensor,
    p: float,
    generator: torch.Generator | None = None,
    *,
    rescale: bool = True,
    seed: int | None = None,
    task: int = 0,
) -> torch.Tensor:
    """DARE (Yu et al., 2024): drop each entry with probability ``p``, rescale survivors by ``1/(1-p)``.

    With ``seed`` the keep mask is :func:`dare_keep_mask` ``(numel, p, seed, task)``: the engine's
    draw, which chunked and threaded kernels reproduce exactly. Without, it is
    ``torch.bernoulli(full_like(delta, 1-p), generator=generator)``: the same draw as peft's
    ``random_pruning``, so a generator seeded like torch's global RNG reproduces peft.
    """
    _check_fraction("p", p, upper_open=True)
    delta = _f32(delta)
    if p == 0:
        return delta
    keep_probability = 1.0 - p
    if seed is not None:
        mask = dare_keep_mask(delta.numel(), p, seed, task).reshape(delta.shape)
    else:
        mask = torch.bernoulli(torch.full_like(delta.detach(), keep_probability), generator=generator)
    pruned = delta * mask
    return pruned / keep_probability if rescale else pruned


def _chunks(numel: int) -> Iterator[tuple[int, int]]:
    for start in range(0, numel, CHUNK):
        yield start, min(start + CHUNK, numel)


def dare_keep_mask(numel: int, p: float, seed: int, task: int = 0) -> torch.Tensor:
    """DARE's keep mask for ``numel`` entries: each kept with probability ``1 − p``, drawn chunk by chunk.

    Chunk j of task i draws ``CHUNK`` uniform float32s from its own numpy SFC64 stream seeded by
    ``(seed, i, j)``, so a chunk's mask does not depend on any other (chunks can be drawn in any
    order or in parallel) and the whole mask is a pure function of ``(numel, p, seed, task)``. About
    5× faster than ``torch.bernoulli``'s serial stream, which capped DARE-TIES at ~13 ns per entry.
    """
    _check_fraction("p", p, upper_open=True)
    mask = torch.empty(numel, dtype=torch.float32)
    for index, (start, stop) in enumerate(_chunks(numel)):
        mask[start:stop] = dare_chunk_mask(stop - start, p, seed, task, index)
    return mask


def dare_chunk_mask(length: int, p: float, seed: int, task: int, chunk_index: int) -> torch.Tensor:
    """The float32 (0/1) keep mask of chunk ``chunk_index`` of task ``task`` (see :func:`dare_keep_mask`)."""
    rng = np.random.Generator(np.random.SFC64(np.random.SeedSequence([seed, task, chunk_index])))
    draws = rng.random(length, dtype=np.float32)
    return torch.from_numpy(np.less(draws, np.float32(1.0 - p), out=np.empty(length, dtype=np.float32)))


def elect_and_merge(trimmed: Sequence[torch.Tensor], weights: Sequence[float], reduce: Reduce = "mean") -> torch.Tensor:
    """TIES's elect + disjoint merge over already-trimmed deltas.

    The elected sign per entry is that of the summed trimmed mass (0 counts as +); each task
    contributes ``w_i·δ_i`` where its sign agrees; ``reduce="mean"`` divides by the number of
    agreeing tasks (at least 1), ``"sum"`` does not (SOMF's variant).
    """
    if reduce not in ("mean", "sum"):
        raise ConfigError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    deltas = [_f32(t) for t in trimmed]
    with torch.no_grad():
        mass = deltas[0].detach().clone()
        for delta in deltas[1:]:
            mass += delta.detach()
        elected = torch.where(mass >= 0, 1.0, -1.0)
        del mass
        agree = [torch.sign(delta.detach()) == elected for delta in deltas]
    merged = deltas[0] * agree[0] * weights[0]
    for delta, mask, weight in zip(deltas[1:], agree[1:], weights[1:], strict=True):
        merged = merged + delta * mask * weight
    if reduce == "sum":
        return merged
    with torch.no_grad():
        count = agree[0].to(torch.float32)
        for mask in agree[1:]:
            count += mask
        count.clamp_(min=1.0)
    return merged / count


def trim_elect_merge(
    deltas: Sequence[torch.Tensor],
    thresholds: Sequence[float | None],
    weights: Sequence[float],
    reduce: Reduce = "mean",
) -> torch.Tensor:
    """``elect_and_merge([apply_threshold(δ_i, t_i)], weights, reduce)`` fused, without gradients.

    The fast path of the engine's TIES: one pass per cache-sized sub-chunk instead of one pass
    per step over whole tensors. Equal to the composition of the reference ops (≤ 1e-6 in fp32).
    """
    if reduce not in ("mean", "sum"):
        raise ConfigError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
    if not deltas or len(deltas) != len(thresholds) or len(deltas) != len(weights):
        raise ConfigError(
            f"trim_elect_merge: expected matching non-empty deltas/thresholds/weights, got "
            f"{len(deltas)}/{len(thresholds)}/{len(weights)}"
        )
    with torch.no_grad():
        flats = [_f32(d.detach()).reshape(-1) for d in deltas]
        out = torch.empty_like(flats[0])
        for start in range(0, out.numel(), _FAST_CHUNK):
            stop = min(start + _FAST_CHUNK, out.numel())
            kept = []
            for flat, threshold in zip(flats, thresholds, strict=True):
                part = flat[start:stop]
                if threshold is not None:
                    part = torch.where(part.abs() >= threshold, part, 0.0)
                kept.append(part)
            mass = torch.stack(kept).sum(0) if len(kept) > 1 else kept[0]
            positive = mass >= 0
            merged = out[start:stop]
            merged.zero_()
            count = torch.zeros_like(merged) if reduce == "mean" else None
            for part, weight in zip(kept, weights, strict=True):
                # the part of δ_i whose sign agrees with the elected one (trimmed zeros agree with neither)
                agreeing = torch.where(positive, part.clamp(min=0), part.clamp(max=0))
                merged.add_(agreeing, alpha=weight)
                if count is not None:
                    count += agreeing != 0
            if count is not None:
                merged.div_(count.clamp_(min=1.0))
    return out.reshape(deltas[0].shape)


def ties(
    deltas: Sequence[torch.Tensor],
    density: float,
    lam: float = 1.0,
    reduce: Reduce = "mean",
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """TIES-merging (Yadav et al., 2023) of task vectors: trim → elect sign → disjoint mean (or sum).

    Returns the merged delta (scaled by ``lam``/``weights``); add it to the base yourself.
    """
    trimmed = [magnitude_prune(delta, density) for delta in deltas]
    return elect_and_merge(trimmed, _task_weights(len(deltas), lam, weights), reduce)


def fuse_deltas(
    rule: str,
    deltas: Sequence[torch.Tensor],
    params: Mapping[str, Any] | None = None,
    generator: torch.Generator | None = None,
    *,
    seed: int | None = None,
) -> torch.Tensor:
    """Fuse task vectors with a named rule and return the merged delta (not including the base).

    DARE's masks: with ``seed``, task i's is ``dare_keep_mask(numel, p, seed, task=i)`` (the
    engine's draw); otherwise one torch ``generator`` drawn task by task (peft's draw).

    rules and their params (defaults in brackets):
      task_arithmetic: lam [1.0], weights            → Σ lam·w_i·δ_i
      weight_average:  weights                       → Σ w_i·δ_i / Σ w_i
      ties:            density [0.2], lam [1.0], reduce ["mean"|"sum"], weights
      dare:            p [0.3], lam [1.0], weights   → Σ lam·w_i·DARE(δ_i, p)
      magnitude_prune: density [0.2], lam [1.0], weights → Σ lam·w_i·prune(δ_i)
      dare_ties:       p [0.3], lam [1.0], reduce ["mean"|"sum"], weights → elect/merge of DARE(δ_i, p)
    Differentiable in the deltas.
    """
    if rule not in FUSION_RULE_OPTIONS:
        raise ConfigError(
            f"unknown fusion rule {name_unknown([rule], list(FUSION_RULES), cutoff=0.5)} (known: {', '.join(FUSION_RULES)})"
        )
    options, accepted = FUSION_RULE_OPTIONS[rule]
    params = dict(params or {})
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(
            f"fusion rule {rule!r}: unknown parameter(s) {', '.join(unknown)} (accepted: {', '.join(sorted(accepted))})"
        )
    if not deltas:
        raise ConfigError(f"fusion rule {rule!r}: at least one task vector is required")
    lam = float(params.get("lam", 1.0))
    weights = params.get("weights")
    task_weights = _task_weights(len(deltas), lam, weights)
    if options.sparsify == "magnitude":
        density = float(params.get("density", 0.2))
        deltas = [magnitude_prune(delta, density) for delta in deltas]
    elif options.sparsify == "dare":
        p = float(params.get("p", 0.3))
        deltas = [dare(delta, p, generator, seed=seed, task=i) for i, delta in enumerate(deltas)]
    if options.sign_consensus:
        return elect_and_merge(deltas, task_weights, params.get("reduce", "mean"))
    if options.reduce == "mean":
        return weight_average(deltas, weights)
    return weighted_sum(deltas, task_weights)


def task_arithmetic_rows(
    base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], out: torch.Tensor | None = None
) -> torch.Tensor:
    """``base + Σ w_i·(m_i − base)`` in one fused, no-grad pass into a preallocated float32 ``out``.

    The fast path of task arithmetic / weight averaging over dense fine-tunes: per cache-sized
    sub-chunk it accumulates in place (one scratch buffer, no list of deltas). The operation order
    is that of ``base + weighted_sum([m_i − base], weights)``, so the result is bit-identical.
    """
    if not models or len(models) != len(weights):
        raise ConfigError(
            f"task_arithmetic_rows: expected matching non-empty models/weights, got {len(models)}/{len(weights)}"
        )
    with torch.no_grad():
        flat_base = base.detach().reshape(-1)
        flat_models = [m.detach().reshape(-1) for m in models]
        result = torch.empty(flat_base.shape, dtype=torch.float32) if out is None else out.reshape(-1)
        scratch = torch.empty(min(_FAST_CHUNK, result.numel()), dtype=torch.float32)
        for start in range(0, result.numel(), _FAST_CHUNK):
            stop = min(start + _FAST_CHUNK, result.numel())
            anchor = _f32(flat_base[start:stop])
            acc = result[start:stop]
            torch.sub(_f32(flat_models[0][start:stop]), anchor, out=acc)
            acc.mul_(weights[0])
            tmp = scratch[: stop - start]
            for model, weight in zip(flat_models[1:], weights[1:], strict=True):
                torch.sub(_f32(model[start:stop]), anchor, out=tmp)
                tmp.mul_(weight)
                acc.add_(tmp)
            acc.add_(anchor)
    return result.reshape(base.shape)


# --- mergekit 0.1.5 semantics (generalized task arithmetic), for parity with its YAML configs ---


def mergekit_magnitude(delta: torch.Tensor, density: float, *, rescale: bool = False) -> torch.Tensor:
    """mergekit's magnitude sparsification: exactly ``max(1, int(density·n))`` entries kept, chosen
    by a descending ``argsort`` of |δ| (its tie order), optionally L1-rescaled."""
    delta = _f32(delta.detach())
    if density >= 1:
        return delta
    if density <= 0 or delta.numel() == 0:
        return torch.zeros_like(delta)
    k = max(1, int(density * delta.numel()))
    mask = torch.zeros(delta.numel(), dtype=delta.dtype)
    mask[torch.argsort(delta.abs().reshape(-1), descending=True)[:k]] = 1
    return _l1_rescaled(delta, mask.reshape(delta.shape), rescale)


def mergekit_random(
    delta: torch.Tensor, density: float, generator: torch.Generator | None = None, *, rescale: bool = True
) -> torch.Tensor:
    """mergekit's DARE sparsification: keep each entry with probability ``density``
    (``bernoulli(full_like(δ, density))``) and rescale the survivors to the original L1 norm
    (not by ``1/density``) when ``rescale``."""
    delta = _f32(delta.detach())
    if density >= 1:
        return delta
    mask = torch.bernoulli(torch.full_like(delta, density), generator=generator)
    return _l1_rescaled(delta, mask, rescale)


def _l1_rescaled(delta: torch.Tensor, mask: torch.Tensor, rescale: bool, eps: float = 1e-7) -> torch.Tensor:
    masked = delta * mask
    if not rescale:
        return masked
    before, after = delta.abs().sum(), masked.abs().sum()
    if before < eps or after < eps:
        return masked
    return masked * (before / after)


def mergekit_combine(
    sparse: Sequence[torch.Tensor], weights: Sequence[float], *, consensus: bool, normalize: bool, lam: float = 1.0
) -> torch.Tensor:
    """mergekit's combination of sparsified task vectors (the merged delta, base not added).

    Weights are applied *before* the sign election (sign of Σ w_i·δ_i, ties to +; a zero entry
    agrees with neither sign); ``normalize`` divides by Σ w_i·agree_i (or by Σ w_i without
    consensus); ``lam`` scales the result last.
    """
    if not sparse or len(sparse) != len(weights):
        raise ConfigError(
            f"mergekit_combine: expected matching non-empty deltas/weights, got {len(sparse)}/{len(weights)}"
        )
    with torch.no_grad():
        stacked = torch.stack([_f32(d.detach()) for d in sparse])
        w = torch.tensor([float(x) for x in weights], dtype=torch.float32).reshape(-1, *([1] * (stacked.dim() - 1)))
        stacked.mul_(w)
        if consensus:
            elected = (stacked.sum(dim=0) >= 0).to(torch.float32) * 2 - 1
            agree = (stacked.sign() == elected).to(torch.float32)
            mixed = (stacked * agree).sum(dim=0)
            divisor = (w * agree).sum(dim=0)
            divisor[divisor == 0] = 1
        else:
            mixed = stacked.sum(dim=0)
            divisor = w.sum(dim=0)
            divisor[divisor.abs() < 1e-8] = 1
        if normalize:
            mixed /= divisor
        if lam != 1:
            mixed *= lam
    return mixed
