"""No-grad merge kernels over dense fine-tunes, chunk by chunk with preallocated buffers.

The engine's hot loops. Each works on the stored (bf16/fp16/fp32) tensors of the base and the
fine-tunes directly: per cache-sized chunk the base is converted once, every task vector is
formed in a reused float32 buffer (a mixed-dtype ``sub`` is exact: bf16 → f32 is), and every
step writes into a buffer with ``out=`` or in place. Measured on a 32000×2048 bf16 tensor, the
allocations alone (each 1 MB temporary is a fresh mmap and its page faults) cost more than the
arithmetic. Results equal the reference ops of ``_ops`` (≤ 1e-6 in fp32; tests in
``tests/realign_methods/test_kernels.py``).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy
import torch

from harness.core.errors import ConfigError
from realign_methods._ops import CHUNK, Reduce, _check_fraction, dare_chunk_mask, magnitude_threshold_reference

_T = TypeVar("_T")

_BUCKET_SHIFT = 16  # radix buckets: the top 16 bits of |x|'s float32 pattern (sign-less exponent + 7 mantissa bits)
_BUCKETS = 1 << (31 - _BUCKET_SHIFT)
_NONFINITE_BUCKET = 0x7F800000 >> _BUCKET_SHIFT  # inf and NaN patterns start here
_SAMPLE = 1 << 16  # sampled magnitudes per task that bracket its threshold
_BRACKET_SIGMAS = 6.0  # bracket half-width in binomial standard deviations of the sample rank
_MIN_SAMPLED_NUMEL = 16 * _SAMPLE  # below this a sample saves nothing over the radix sweeps


class _Buffers:
    """Named float32/bool/int scratch buffers of one chunk's length, allocated once per tensor."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._store: dict[str, torch.Tensor] = {}

    def get(self, key: str, length: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        buffer = self._store.get(key)
        if buffer is None:
            buffer = self._store[key] = torch.empty(self.length, dtype=dtype)
        return buffer[:length]


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().reshape(-1)


def _deltas_into(
    buffers: _Buffers, base: torch.Tensor, models: Sequence[torch.Tensor], start: int, stop: int
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The float32 base chunk and each ``model − base`` chunk, in reused buffers."""
    length = stop - start
    anchor = buffers.get("base", length)
    anchor.copy_(base[start:stop])
    deltas = []
    for index, model in enumerate(models):
        delta = buffers.get(f"delta{index}", length)
        torch.sub(model[start:stop], anchor, out=delta)
        deltas.append(delta)
    return anchor, deltas


def magnitude_thresholds(base: torch.Tensor, models: Sequence[torch.Tensor], density: float) -> list[float | None]:
    """``magnitude_threshold(m_i − base, density)`` for every fine-tune, exact.

    A large tensor takes one sweep: a random sample of each |δ_i| brackets its k-th largest
    magnitude in [lo, hi] (six binomial standard deviations of the sample rank either side), the
    sweep counts the entries above hi and collects the few in [lo, hi], and ``kthvalue`` ranks
    those. The counts prove the bracket holds the k-th largest; when they do not (a sample that
    missed, or a NaN/inf), that task falls to the two-sweep radix select of :func:`_radix_thresholds`.
    Entries equal to the threshold are all kept.
    """
    _check_fraction("density", density, upper_open=False)
    if density >= 1:
        return [None] * len(models)
    flat_base, flats = _flat(base), [_flat(m) for m in models]
    numel = flat_base.numel()
    k = int(density * numel)
    if k == 0:
        return [float("inf")] * len(models)
    thresholds: list[float | None] = [None] * len(models)
    unresolved = list(range(len(models)))
    if numel >= _MIN_SAMPLED_NUMEL:
        brackets = [_sample_bracket(flat_base, flat, k, seed=index) for index, flat in enumerate(flats)]
        sampled = [index for index, bracket in enumerate(brackets) if bracket is not None]
        bounds = [bracket for bracket in brackets if bracket is not None]
        swept = _map_spans(numel, lambda span: _bracket_sweep(flat_base, [flats[i] for i in sampled], bounds, span))
        for position, index in enumerate(sampled):
            above = sum(part[position][0] for part in swept)
            finite = all(part[position][2] for part in swept)
            band = torch.cat([part[position][1] for part in swept])
            if finite and above < k <= above + band.numel():
                thresholds[index] = float(band.kthvalue(band.numel() - (k - above) + 1).values)
                unresolved.remove(index)
    if unresolved:
        radix = _radix_thresholds(flat_base, [flats[i] for i in unresolved], density, k)
        for index, threshold in zip(unresolved, radix, strict=True):
            thresholds[index] = threshold
    return thresholds


def _sample_bracket(base: torch.Tensor, model: torch.Tensor, k: int, seed: int) -> tuple[float, float] | None:
    """[lo, hi] that likely holds the k-th largest |model − base|, from a random sample; None if unusable."""
    numel = base.numel()
    positions = torch.randint(numel, (_SAMPLE,), generator=torch.Generator().manual_seed(seed))
    sample = (model[positions].float() - base[positions].float()).abs_()
    if not bool(torch.isfinite(sample).all()):
        return None
    descending = sample.sort(descending=True).values
    fraction = k / numel
    rank = fraction * _SAMPLE
    margin = _BRACKET_SIGMAS * math.sqrt(_SAMPLE * fraction * (1 - fraction)) + 16
    upper, lower = math.floor(rank - margin), math.ceil(rank + margin)
    if lower >= _SAMPLE:  # the bracket would reach down to 0: most of the tensor would be collected
        return None
    hi = float(descending[upper]) if upper >= 0 else math.inf
    return float(descending[lower]), hi


def _bracket_sweep(
    base: torch.Tensor, models: Sequence[torch.Tensor], brackets: Sequence[tuple[float, float]], span: range
) -> list[tuple[int, torch.Tensor, bool]]:
    """Per task: #entries above hi, the entries in [lo, hi], and whether every |δ| was finite.

    The masks run in numpy: its boolean compares and compaction are vectorised, torch's bool
    kernels are not (measured per 1M float32 entries: a compare into a bool mask 0.10 ms vs 0.92 ms,
    the compaction 1.0 ms vs 1.9-4.1 ms).
    """
    buffers = _Buffers(min(CHUNK, base.numel()))
    above = [0] * len(models)
    finite = [True] * len(models)
    found: list[list[torch.Tensor]] = [[] for _ in models]
    for start, stop in _span_chunks(base.numel(), span):
        length = stop - start
        _, deltas = _deltas_into(buffers, base, models, start, stop)
        at_most_hi = buffers.get("at_most_hi", length, torch.bool).numpy()
        at_least_lo = buffers.get("at_least_lo", length, torch.bool).numpy()
        for index, (delta, (lo, hi)) in enumerate(zip(deltas, brackets, strict=True)):
            magnitude = delta.abs_()
            finite[index] = finite[index] and math.isfinite(float(magnitude.sum()))  # a NaN/inf makes the sum one
            values = magnitude.numpy()
            numpy.less_equal(values, hi, out=at_most_hi)
            above[index] += length - int(numpy.count_nonzero(at_most_hi))
            numpy.greater_equal(values, lo, out=at_least_lo)
            numpy.logical_and(at_most_hi, at_least_lo, out=at_most_hi)
            found[index].append(torch.from_numpy(values[at_most_hi]))
    return [
        (count, torch.cat(parts) if parts else torch.empty(0), ok)
        for count, parts, ok in zip(above, found, finite, strict=True)
    ]


def _radix_thresholds(base: torch.Tensor, models: Sequence[torch.Tensor], density: float, k: int) -> list[float | None]:
    """The exact thresholds in two sweeps, whatever the data.

    Sweep 1 histograms the top 16 bits of every |δ_i| (non-negative floats order like their bit
    patterns); sweep 2 collects only the entries in the bucket holding each task's k-th largest
    magnitude, and ``kthvalue`` ranks those few. ``bincount`` and boolean indexing run on one core,
    so each sweep splits the chunks over threads.
    """
    partial = _map_spans(base.numel(), lambda span: _histograms(base, models, span))
    histograms = [torch.stack(parts).sum(0) for parts in zip(*partial, strict=True)]
    targets = [_bucket_of(histogram, k) for histogram in histograms]
    found = _map_spans(base.numel(), lambda span: _bucket_entries(base, models, targets, span))
    thresholds: list[float | None] = []
    for index, target in enumerate(targets):
        if target is None:  # NaN/inf patterns do not order like values: the reference decides
            thresholds.append(magnitude_threshold_reference(models[index].float() - base.float(), density))
            continue
        values = torch.cat([entries[index] for entries in found])
        thresholds.append(float(values.kthvalue(values.numel() - target[1] + 1).values))
    return thresholds


def _spans(numel: int, parts: int) -> list[range]:
    """The chunk indices split into at most ``parts`` contiguous runs."""
    count = -(-numel // CHUNK)
    parts = max(1, min(parts, count))
    return [range(count * i // parts, count * (i + 1) // parts) for i in range(parts)]


def _span_chunks(numel: int, span: range) -> Iterator[tuple[int, int]]:
    for index in span:
        yield index * CHUNK, min((index + 1) * CHUNK, numel)


def _histograms(base: torch.Tensor, models: Sequence[torch.Tensor], span: range) -> list[torch.Tensor]:
    buffers = _Buffers(min(CHUNK, base.numel()))
    histograms = [torch.zeros(_BUCKETS, dtype=torch.int64) for _ in models]
    for start, stop in _span_chunks(base.numel(), span):
        _, deltas = _deltas_into(buffers, base, models, start, stop)
        for delta, histogram in zip(deltas, histograms, strict=True):
            bits = delta.abs_().view(torch.int32).bitwise_right_shift_(_BUCKET_SHIFT)
            histogram += torch.bincount(bits, minlength=_BUCKETS)
    return histograms


def _bucket_of(histogram: torch.Tensor, k: int) -> tuple[int, int] | None:
    """(bucket holding the k-th largest, its rank inside that bucket); None if any entry is not finite."""
    if int(histogram[_NONFINITE_BUCKET:].sum()):
        return None
    at_or_above = histogram.flip(0).cumsum(0).flip(0)  # entries in this bucket or a higher one
    bucket = int((at_or_above >= k).nonzero()[-1])
    return bucket, k - int(at_or_above[bucket] - histogram[bucket])


def _bucket_entries(
    base: torch.Tensor, models: Sequence[torch.Tensor], targets: Sequence[tuple[int, int] | None], span: range
) -> list[torch.Tensor]:
    buffers = _Buffers(min(CHUNK, base.numel()))
    found: list[list[torch.Tensor]] = [[] for _ in models]
    for start, stop in _span_chunks(base.numel(), span):
        _, deltas = _deltas_into(buffers, base, models, start, stop)
        shifted = buffers.get("bits", stop - start, torch.int32)
        for index, (delta, target) in enumerate(zip(deltas, targets, strict=True)):
            if target is not None:
                magnitude = delta.abs_()
                torch.bitwise_right_shift(magnitude.view(torch.int32), _BUCKET_SHIFT, out=shifted)
                found[index].append(magnitude[shifted == target[0]])
    return [torch.cat(parts) if parts else torch.empty(0) for parts in found]


def _check_lengths(kernel: str, models: Sequence[torch.Tensor], *others: Sequence[object]) -> None:
    if not models or any(len(other) != len(models) for other in others):
        names = "/".join(["models", *(["thresholds"] if len(others) == 2 else []), "weights"])
        counts = "/".join(str(len(x)) for x in (models, *others))
        raise ConfigError(f"{kernel}: expected matching non-empty {names}, got {counts}")


def _check_reduce(reduce: str) -> None:
    if reduce not in ("mean", "sum"):
        raise ConfigError(f"reduce must be 'mean' or 'sum', got {reduce!r}")


def _elect_into(
    buffers: _Buffers, deltas: list[torch.Tensor], weights: Sequence[float], reduce: Reduce
) -> torch.Tensor:
    """TIES's elect + disjoint merge of one chunk's (already trimmed) deltas, in place; returns the merge.

    Per entry, with s = ±1 the sign of the summed mass (0 counts as +): the agreeing parts are
    ``relu(δ_i·s)·s``, so the merge is ``s·Σ w_i·relu(δ_i·s)`` over ``max(1, #agreeing)``.
    """
    length = deltas[0].numel()
    mass = buffers.get("mass", length)
    mass.copy_(deltas[0])
    for delta in deltas[1:]:
        mass.add_(delta)
    sign = buffers.get("sign", length)
    torch.ge(mass, 0, out=sign)
    sign.mul_(2.0).sub_(1.0)  # the elected sign: +1 where the summed mass is ≥ 0, else −1
    total, count = mass.zero_(), buffers.get("count", length).zero_()
    keep = buffers.get("keep", length)
    for delta, weight in zip(deltas, weights, strict=True):
        agreeing = delta.mul_(sign).clamp_(min=0)  # |δ_i| where δ_i agrees with the elected sign
        total.add_(agreeing, alpha=weight)
        if reduce == "mean":
            count.add_(torch.gt(agreeing, 0, out=keep))  # float masks: bool ones run unvectorised, 3-6x slower
    total.mul_(sign)
    if reduce == "mean":
        total.div_(count.clamp_(min=1.0))
    return total


def _map_spans(numel: int, work: Callable[[range], _T]) -> list[_T]:
    """``work`` over the chunk indices split in one contiguous run per torch thread, in threads.

    While the workers run, torch's intra-op pool is one thread: each elementwise op on a chunk
    would otherwise fork its own OpenMP team in every worker, n² busy threads on n cores
    (measured: slower with two workers than with one).
    """
    spans = _spans(numel, torch.get_num_threads())
    if len(spans) == 1:
        return [work(spans[0])]
    with torch_threads(1):
        return list(_workers(len(spans)).map(work, spans))


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` inside the block, restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.cache
def _workers(count: int) -> ThreadPoolExecutor:
    """A kept pool per worker count: a merge calls the kernels once per tensor, and starting fresh
    threads each time cost ~4 ms per thread (0.36 s of an 8 s merge, profiled)."""
    return ThreadPoolExecutor(max_workers=count, thread_name_prefix="merge-kernel")


def ties_merge(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    thresholds: Sequence[float | None],
    weights: Sequence[float],
    reduce: Reduce,
    out: torch.Tensor,
) -> torch.Tensor:
    """``base + elect_and_merge([trim(m_i − base, t_i)], weights, reduce)`` written into ``out``."""
    _check_reduce(reduce)
    _check_lengths("ties_merge", models, thresholds, weights)
    flat_base, flats, flat_out = _flat(base), [_flat(m) for m in models], out.reshape(-1)

    def work(span: range) -> None:
        buffers = _Buffers(min(CHUNK, flat_base.numel()))
        for start, stop in _span_chunks(flat_base.numel(), span):
            anchor, deltas = _deltas_into(buffers, flat_base, flats, start, stop)
            keep = buffers.get("keep", stop - start)
            for delta, threshold in zip(deltas, thresholds, strict=True):
                if threshold is not None:
                    torch.ge(torch.abs(delta, out=keep), threshold, out=keep)
                    delta.mul_(keep)
            flat_out[start:stop].copy_(_elect_into(buffers, deltas, weights, reduce).add_(anchor))

    with torch.no_grad():
        _map_spans(flat_base.numel(), work)
    return out


def dare_merge(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    p: float,
    seed: int,
    weights: Sequence[float],
    out: torch.Tensor,
    *,
    consensus: bool,
    reduce: Reduce = "mean",
) -> torch.Tensor:
    """DARE over every ``m_i − base`` (drop with probability ``p``, survivors ÷ (1 − p)), then either
    ``base + Σ w_i·δ̃_i`` or, with ``consensus``, TIES's elect + disjoint merge, written into ``out``.

    Task i's keep mask is :func:`dare_keep_mask` ``(numel, p, seed, task=i)``, so the result is a pure
    function of the inputs and ``seed`` and does not depend on the thread count.
    """
    _check_fraction("p", p, upper_open=True)
    _check_reduce(reduce)
    _check_lengths("dare_merge", models, weights)
    flat_base, flats, flat_out = _flat(base), [_flat(m) for m in models], out.reshape(-1)
    keep_probability = 1.0 - p

    def work(span: range) -> None:
        buffers = _Buffers(min(CHUNK, flat_base.numel()))
        for start, stop in _span_chunks(flat_base.numel(), span):
            anchor, deltas = _deltas_into(buffers, flat_base, flats, start, stop)
            for task, delta in enumerate(deltas):
                if p > 0:
                    delta.mul_(dare_chunk_mask(stop - start, p, seed, task, start // CHUNK)).div_(keep_probability)
            if consensus:
                merged = _elect_into(buffers, deltas, weights, reduce).add_(anchor)
            else:  # the order of base + Σ_i DARE(δ_i)·w_i, one task at a time (bit-identical to it)
                merged = anchor
                for delta, weight in zip(deltas, weights, strict=True):
                    merged.add_(delta.mul_(weight))
            flat_out[start:stop].copy_(merged)

    with torch.no_grad():
        _map_spans(flat_base.numel(), work)
    return out


def task_arithmetic(
    base: torch.Tensor, models: Sequence[torch.Tensor], weights: Sequence[float], out: torch.Tensor
) -> torch.Tensor:
    """``base + Σ w_i·(m_i − base)`` written into ``out`` (any float dtype), in one sweep.

    The operation order is that of ``base + weighted_sum([m_i − base], weights)`` (bit-identical).
    """
    _check_lengths("task_arithmetic", models, weights)
    flat_base, flats, flat_out = _flat(base), [_flat(m) for m in models], out.reshape(-1)

    def work(span: range) -> None:
        buffers = _Buffers(min(CHUNK, flat_base.numel()))
        for start, stop in _span_chunks(flat_base.numel(), span):
            length = stop - start
            anchor = buffers.get("base", length)
            anchor.copy_(flat_base[start:stop])
            total, scratch = buffers.get("total", length), buffers.get("scratch", length)
            torch.sub(flats[0][start:stop], anchor, out=total)
            total.mul_(weights[0])
            for model, weight in zip(flats[1:], weights[1:], strict=True):
                torch.sub(model[start:stop], anchor, out=scratch)
                total.add_(scratch.mul_(weight))
            flat_out[start:stop].copy_(total.add_(anchor))

    with torch.no_grad():
        _map_spans(flat_base.numel(), work)
    return out
