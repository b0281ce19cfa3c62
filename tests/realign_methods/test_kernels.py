"""The no-grad merge kernels (realign_methods/_kernels.py) against the reference ops of ``_ops``."""

from __future__ import annotations

import pytest
import torch

from harness.core.errors import ConfigError
from realign_methods import _kernels as kernels
from realign_methods import ops


def _family(shape: tuple[int, ...], n: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A base and ``n`` fine-tunes whose deltas take few distinct values: many ties at any threshold."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=generator).to(dtype)
    models = []
    for _ in range(n):
        steps = torch.randint(-6, 7, shape, generator=generator).float() * 0.125
        models.append((base.float() + steps).to(dtype))
    return base, models


def _reference_deltas(base: torch.Tensor, models: list[torch.Tensor]) -> list[torch.Tensor]:
    return [m.float() - base.float() for m in models]


# (3, 700001) spans several kernel chunks (CHUNK entries each) with a ragged last one
SHAPES = [(1,), (7,), (64, 33), (3, 700_001)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.0, 1e-4, 0.2, 0.5, 1.0])
def test_magnitude_thresholds_equal_the_reference(shape: tuple[int, ...], density: float) -> None:
    base, models = _family(shape, 3, torch.bfloat16, seed=len(shape) + int(density * 10))
    got = kernels.magnitude_thresholds(base, models, density)
    want = [ops.magnitude_threshold_reference(d, density) for d in _reference_deltas(base, models)]
    assert got == want


@pytest.mark.parametrize("shape", [(5000,), (3, 700_001)])  # the radix path, and the sampled one
def test_magnitude_thresholds_with_a_nonfinite_delta_fall_back_to_the_reference(shape: tuple[int, ...]) -> None:
    base, models = _family(shape, 2, torch.float32, seed=4)
    models[1].view(-1)[17] = float("inf")
    got = kernels.magnitude_thresholds(base, models, 0.1)
    want = [ops.magnitude_threshold_reference(d, 0.1) for d in _reference_deltas(base, models)]
    assert [str(v) for v in got] == [str(v) for v in want]


def test_magnitude_thresholds_fall_back_to_the_radix_select_when_the_sample_misses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a bracket that cannot hold the k-th largest (every |δ| is above it): the counts prove the miss
    base, models = _family((3, 700_001), 2, torch.float32, seed=5)
    monkeypatch.setattr(kernels, "_sample_bracket", lambda *args, **kwargs: (1e-9, 2e-9))
    calls: list[int] = []
    radix = kernels._radix_thresholds

    def counted(*args: object, **kwargs: object) -> list[float | None]:
        calls.append(1)
        return radix(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels, "_radix_thresholds", counted)
    got = kernels.magnitude_thresholds(base, models, 0.2)
    want = [ops.magnitude_threshold_reference(d, 0.2) for d in _reference_deltas(base, models)]
    assert got == want and calls == [1]


def test_magnitude_thresholds_take_one_sampled_sweep_on_a_large_tensor(monkeypatch: pytest.MonkeyPatch) -> None:
    base, models = _family((3, 700_001), 3, torch.bfloat16, seed=6)
    monkeypatch.setattr(kernels, "_radix_thresholds", lambda *args: pytest.fail("the sampled bracket missed"))
    got = kernels.magnitude_thresholds(base, models, 0.2)
    assert got == [ops.magnitude_threshold_reference(d, 0.2) for d in _reference_deltas(base, models)]


def test_magnitude_thresholds_do_not_depend_on_the_thread_count() -> None:
    base, models = _family((4, 600_000), 2, torch.float32, seed=9)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernels.magnitude_thresholds(base, models, 0.2)
        torch.set_num_threads(2)
        two = kernels.magnitude_thresholds(base, models, 0.2)
    finally:
        torch.set_num_threads(before)
    assert one == two


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("density", [0.2, 1.0])
def test_ties_merge_equals_base_plus_elect_and_merge(
    dtype: torch.dtype, shape: tuple[int, ...], reduce: str, density: float
) -> None:
    base, models = _family(shape, 3, dtype, seed=21)
    weights = [0.4, 1.0, -0.7]
    deltas = _reference_deltas(base, models)
    thresholds = [ops.magnitude_threshold_reference(d, density) for d in deltas]
    trimmed = [ops.apply_threshold(d, t) for d, t in zip(deltas, thresholds, strict=True)]
    want = base.float() + ops.elect_and_merge(trimmed, weights, reduce)  # type: ignore[arg-type]
    out = torch.empty(shape, dtype=torch.float32)
    got = kernels.ties_merge(base, models, thresholds, weights, reduce, out)  # type: ignore[arg-type]
    assert got is out
    assert float((got - want).abs().max()) <= 1e-6


def test_ties_merge_writes_the_requested_dtype() -> None:
    base, models = _family((64, 33), 2, torch.bfloat16, seed=2)
    thresholds: list[float | None] = [None, None]
    full = kernels.ties_merge(base, models, thresholds, [1.0, 1.0], "mean", torch.empty(64, 33))
    half = kernels.ties_merge(base, models, thresholds, [1.0, 1.0], "mean", torch.empty(64, 33, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16
    assert torch.equal(half, full.to(torch.bfloat16))


@pytest.mark.parametrize("shape", SHAPES)
def test_task_arithmetic_is_bit_identical_to_the_reference_order(shape: tuple[int, ...]) -> None:
    base, models = _family(shape, 3, torch.bfloat16, seed=5)
    weights = [0.3, -1.25, 0.7]
    want = base.float() + ops.weighted_sum(_reference_deltas(base, models), weights)
    got = kernels.task_arithmetic(base, models, weights, torch.empty(shape, dtype=torch.float32))
    assert torch.equal(got, want)


def test_kernels_refuse_mismatched_inputs() -> None:
    base, models = _family((10,), 2, torch.float32, seed=0)
    with pytest.raises(ConfigError, match="matching non-empty models/thresholds/weights, got 2/1/2"):
        kernels.ties_merge(base, models, [None], [1.0, 1.0], "mean", torch.empty(10))
    with pytest.raises(ConfigError, match="reduce must be 'mean' or 'sum', got 'max'"):
        kernels.ties_merge(base, models, [None, None], [1.0, 1.0], "max", torch.empty(10))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="matching non-empty models/weights, got 0/0"):
        kernels.task_arithmetic(base, [], [], torch.empty(10))


def test_dare_keep_mask_is_a_pure_function_of_size_rate_seed_and_task() -> None:
    numel = 3 * kernels.CHUNK + 123
    first = ops.dare_keep_mask(numel, 0.3, seed=7)
    assert torch.equal(first, ops.dare_keep_mask(numel, 0.3, seed=7))
    assert not torch.equal(first, ops.dare_keep_mask(numel, 0.3, seed=8))
    assert not torch.equal(first, ops.dare_keep_mask(numel, 0.3, seed=7, task=1))
    assert set(first.unique().tolist()) == {0.0, 1.0}
    # chunk j depends only on (seed, task, j): drawing one chunk alone gives the same bits
    start = 2 * kernels.CHUNK
    assert torch.equal(
        first[start : start + kernels.CHUNK],
        ops.dare_keep_mask(3 * kernels.CHUNK, 0.3, seed=7)[start : start + kernels.CHUNK],
    )
    kept = float(first.mean())
    assert abs(kept - 0.7) < 0.005  # ~800k draws: the rate is within a few σ (σ ≈ 5e-4)
    with pytest.raises(ConfigError, match="p"):
        ops.dare_keep_mask(10, 1.0, seed=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("consensus", [False, True])
@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_dare_merge_equals_the_reference_ops_on_the_same_masks(
    shape: tuple[int, ...], consensus: bool, p: float
) -> None:
    base, models = _family(shape, 3, torch.bfloat16, seed=31)
    weights = [0.5, 1.0, -0.25]
    numel = base.numel()
    dropped = []
    for task, delta in enumerate(_reference_deltas(base, models)):
        mask = ops.dare_keep_mask(numel, p, seed=11, task=task).reshape(shape) if p else torch.ones(shape)
        dropped.append(delta * mask / (1.0 - p))
    if consensus:
        want = base.float() + ops.elect_and_merge(dropped, weights, "mean")
    else:
        want = base.float() + ops.weighted_sum(dropped, weights)
    got = kernels.dare_merge(base, models, p, 11, weights, torch.empty(shape), consensus=consensus)
    assert float((got - want).abs().max()) <= 1e-6
    if p:  # the drop rate is p per task (loose: the tiny shapes have few entries)
        kept = float((dropped[0] != 0).float().mean()) / max(
            float((_reference_deltas(base, models)[0] != 0).float().mean()), 1e-9
        )
        assert numel < 1000 or abs(kept - (1 - p)) < 0.02
