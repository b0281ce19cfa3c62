"""realign_methods.ops against peft.utils.merge_utils on the same tensors (same seed where random)."""

from __future__ import annotations

import pytest
import torch
from peft.utils import merge_utils

from harness.core.errors import ConfigError
from realign_methods import ops

TOL = 1e-6


@pytest.fixture
def deltas() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1234)
    return [torch.randn(48, 40, generator=gen) * 0.05 for _ in range(3)]


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_task_arithmetic_matches_peft(deltas: list[torch.Tensor]) -> None:
    weights = [0.3, -0.7, 1.2]
    ours = ops.fuse_deltas("task_arithmetic", deltas, {"weights": weights})
    theirs = merge_utils.task_arithmetic(deltas, torch.tensor(weights))
    assert _max_diff(ours, theirs) <= TOL
    base = torch.randn(48, 40)
    assert _max_diff(ops.task_arithmetic(base, deltas, lam=0.5), base + 0.5 * sum(deltas)) <= TOL


@pytest.mark.parametrize("density", [0.0, 0.2, 0.5, 0.99])
def test_magnitude_prune_matches_peft(deltas: list[torch.Tensor], density: float) -> None:
    for delta in deltas:
        ours = ops.magnitude_prune(delta, density)
        theirs = merge_utils.prune(delta, density, method="magnitude")
        assert _max_diff(ours, theirs) <= TOL
        assert int((ours != 0).sum()) == int(density * delta.numel())
    weights = [0.5, 1.0, 0.25]
    ours = ops.fuse_deltas("magnitude_prune", deltas, {"density": density, "weights": weights})
    theirs = merge_utils.magnitude_prune(deltas, torch.tensor(weights), density)
    assert _max_diff(ours, theirs) <= TOL


@pytest.mark.parametrize(
    ("density", "weights"), [(0.2, [1.0, 1.0, 1.0]), (0.5, [0.4, 0.4, 0.4]), (0.3, [0.2, 1.0, 0.6])]
)
def test_ties_mean_matches_peft(deltas: list[torch.Tensor], density: float, weights: list[float]) -> None:
    ours = ops.ties(deltas, density, weights=weights, reduce="mean")
    theirs = merge_utils.ties(deltas, torch.tensor(weights), density, majority_sign_method="total")
    assert _max_diff(ours, theirs) <= TOL
    assert ours.abs().sum() > 0


def test_ties_sum_variant_is_disjoint_sum(deltas: list[torch.Tensor]) -> None:
    lam, density = 0.4, 0.2
    trimmed = torch.stack([merge_utils.prune(d, density, method="magnitude") for d in deltas])
    agree = merge_utils.calculate_majority_sign_mask(trimmed, method="total")
    expected = (trimmed * agree).sum(dim=0) * lam
    assert _max_diff(ops.ties(deltas, density, lam=lam, reduce="sum"), expected) <= TOL
    # the mean variant divides by the agreeing count, so the two differ where tasks overlap
    assert _max_diff(ops.ties(deltas, density, lam=lam, reduce="mean"), expected) > 1e-4


@pytest.mark.parametrize("p", [0.1, 0.3, 0.9])
def test_dare_linear_matches_peft(deltas: list[torch.Tensor], p: float) -> None:
    weights = [0.3, 0.5, 0.7]
    torch.manual_seed(77)  # peft draws from torch's global generator
    theirs = merge_utils.dare_linear(deltas, torch.tensor(weights), density=1.0 - p)
    generator = torch.Generator().manual_seed(77)
    ours = ops.fuse_deltas("dare", deltas, {"p": p, "weights": weights}, generator=generator)
    assert _max_diff(ours, theirs) <= TOL
    kept = float((ops.dare(deltas[0], p, torch.Generator().manual_seed(5)) != 0).float().mean())
    assert abs(kept - (1 - p)) < 0.06


def test_dare_is_seeded_and_rescales() -> None:
    delta = torch.ones(100, 100)
    a = ops.dare(delta, 0.3, torch.Generator().manual_seed(3))
    b = ops.dare(delta, 0.3, torch.Generator().manual_seed(3))
    c = ops.dare(delta, 0.3, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    values = torch.unique(a).tolist()
    assert len(values) == 2 and values[0] == 0.0 and values[1] == pytest.approx(1 / 0.7)


def test_weight_average() -> None:
    xs = [torch.full((3,), v) for v in (1.0, 2.0, 6.0)]
    assert torch.allclose(ops.weight_average(xs), torch.full((3,), 3.0))
    assert torch.allclose(ops.weight_average(xs, [1.0, 0.0, 1.0]), torch.full((3,), 3.5))


def test_ops_are_pure_and_differentiable(deltas: list[torch.Tensor]) -> None:
    leaves = [d.clone().requires_grad_(True) for d in deltas]
    snapshots = [d.detach().clone() for d in leaves]
    for rule, params in [
        ("task_arithmetic", {"lam": 0.3}),
        ("weight_average", {}),
        ("ties", {"density": 0.2, "lam": 0.4, "reduce": "sum"}),
        ("ties", {"density": 0.2, "reduce": "mean"}),
        ("dare", {"p": 0.2, "lam": 0.3}),
        ("magnitude_prune", {"density": 0.5}),
    ]:
        for leaf in leaves:
            leaf.grad = None
        merged = ops.fuse_deltas(rule, leaves, params, generator=torch.Generator().manual_seed(0))
        merged.sum().backward()
        assert all(leaf.grad is not None and leaf.grad.abs().sum() > 0 for leaf in leaves), rule
        assert all(torch.equal(leaf.detach(), snap) for leaf, snap in zip(leaves, snapshots, strict=True)), rule


def test_bad_arguments_are_refused(deltas: list[torch.Tensor]) -> None:
    with pytest.raises(ConfigError, match="p must be in"):
        ops.dare(deltas[0], 1.0)
    with pytest.raises(ConfigError, match="density must be in"):
        ops.magnitude_prune(deltas[0], -0.1)
    with pytest.raises(ConfigError, match="did you mean 'ties'"):
        ops.fuse_deltas("tie", deltas, {})
    with pytest.raises(ConfigError, match="unknown parameter"):
        ops.fuse_deltas("ties", deltas, {"p": 0.1})
    with pytest.raises(ConfigError, match="one weight per task vector"):
        ops.fuse_deltas("task_arithmetic", deltas, {"weights": [1.0]})
