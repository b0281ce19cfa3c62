"""The engine's fast paths against the reference ops, device/thread options, and canonical shard headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from harness.core.checkpoints import CheckpointWriter
from harness.core.errors import ConfigError
from realign_methods import MergeSpec, merge, ops, resolve_device


def _tied_delta(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Few distinct magnitudes, so many entries tie at any threshold (and at the radix bucket edges)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-6, 7, shape, generator=generator).float() * 0.125


@pytest.mark.parametrize("density", [0.0, 1e-4, 0.05, 0.2, 0.5, 0.97, 1.0])
@pytest.mark.parametrize("shape", [(1,), (7,), (64, 33), (300, 1000), (2, 3, 4097)])
def test_fast_threshold_equals_kthvalue(density: float, shape: tuple[int, ...]) -> None:
    tied = _tied_delta(shape, seed=sum(shape))
    spread = torch.randn(shape, generator=torch.Generator().manual_seed(1)) * torch.logspace(-8, 2, shape[-1])
    for delta in (tied, spread, tied.bfloat16().float() - 0.5 * spread):
        assert ops.magnitude_threshold(delta, density) == ops.magnitude_threshold_reference(delta, density)


def test_fast_threshold_keeps_exactly_the_reference_set_with_ties() -> None:
    delta = _tied_delta((400, 250), seed=3)
    for density in (0.1, 0.3, 0.6):
        threshold = ops.magnitude_threshold(delta, density)
        kept = delta.abs() >= threshold
        assert int(kept.sum()) >= int(density * delta.numel())  # all entries tied at the threshold are kept
        assert torch.equal(ops.magnitude_prune(delta, density) != 0, kept & (delta != 0))


def test_fast_threshold_with_nonfinite_falls_back_to_reference() -> None:
    delta = torch.randn(1000)
    delta[[3, 500]] = torch.tensor([float("inf"), float("nan")])
    assert str(ops.magnitude_threshold(delta, 0.1)) == str(ops.magnitude_threshold_reference(delta, 0.1))


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("density", [0.2, 0.5, 1.0])
def test_trim_elect_merge_equals_reference_composition(reduce: str, density: float) -> None:
    # (600, 700) spans several fast-path sub-chunks; integer-valued deltas make the mass 0 often (tie → +)
    deltas = [_tied_delta((600, 700), seed=10 + i) for i in range(3)] + [torch.randn(600, 700)]
    weights = [0.4, 1.0, -0.7, 2.0]
    thresholds = [ops.magnitude_threshold(d, density) for d in deltas]
    reference = ops.elect_and_merge(
        [ops.apply_threshold(d, t) for d, t in zip(deltas, thresholds, strict=True)], weights, reduce
    )  # type: ignore[arg-type]
    fast = ops.trim_elect_merge(deltas, thresholds, weights, reduce)  # type: ignore[arg-type]
    assert fast.shape == reference.shape
    assert float((fast - reference).abs().max()) <= 1e-6


def test_trim_elect_merge_refuses_mismatched_lengths() -> None:
    with pytest.raises(ConfigError, match="matching non-empty deltas/thresholds/weights, got 2/1/2"):
        ops.trim_elect_merge([torch.ones(3), torch.ones(3)], [None], [1.0, 1.0])
    with pytest.raises(ConfigError, match="reduce must be 'mean' or 'sum'"):
        ops.trim_elect_merge([torch.ones(3)], [None], [1.0], "max")  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error(family: dict[str, Path], tmp_path: Path) -> None:
    spec = MergeSpec(method="ties", base=family["aligned"], finetuned=[family["ft1"]], out=tmp_path / "o")
    with pytest.raises(ConfigError, match=r"device 'cuda': CUDA is not available here .*use --device cpu"):
        merge(spec, device="cuda")
    assert not (tmp_path / "o").exists() and not list(tmp_path.iterdir())  # nothing started


def test_bad_device_and_threads_are_refused(family: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected 'cpu', 'cuda' or 'cuda:N'"):
        resolve_device("gpu0")
    with pytest.raises(ConfigError, match="merges run on 'cpu' or 'cuda', not 'meta'"):
        resolve_device("meta")
    spec = MergeSpec(method="ties", base=family["aligned"], finetuned=[family["ft1"]], out=tmp_path / "o")
    with pytest.raises(ConfigError, match="threads must be ≥ 1, got 0"):
        merge(spec, threads=0)


def test_thread_count_does_not_change_the_merge(family: dict[str, Path], tmp_path: Path) -> None:
    outputs = []
    for threads in (1, 2):
        spec = MergeSpec(
            method="ties",
            base=family["aligned"],
            finetuned=[family["ft1"], family["ft2"]],
            params={"density": 0.3},
            out=tmp_path / f"t{threads}",
        )
        outputs.append(merge(spec, threads=threads))
    assert torch.get_num_threads() >= 1
    first, second = ((o / "model.safetensors").read_bytes() for o in outputs)
    assert first == second


def test_writer_sorts_shard_metadata(tmp_path: Path) -> None:
    metadata = {f"key{i}": i for i in (9, 3, 7, 1, 5, 0, 8, 2, 6, 4)}
    paths = []
    for run in range(2):
        with CheckpointWriter(tmp_path / f"m{run}", metadata=metadata, max_shard_size=40) as writer:
            writer.add("a", torch.ones(8))
            writer.add("b", torch.zeros(8))
        paths.append(sorted((tmp_path / f"m{run}").glob("*.safetensors")))
    assert len(paths[0]) == 2
    for first, second in zip(*paths, strict=True):
        assert first.read_bytes() == second.read_bytes()
        raw = first.read_bytes()
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        assert next(iter(header)) == "__metadata__"
        assert list(header["__metadata__"]) == sorted(header["__metadata__"])
        with safe_open(str(first), framework="pt") as handle:  # still a valid safetensors file
            assert handle.metadata()["key3"] == "3"


def test_documented_differences_from_mergekit_ties() -> None:
    """README: where our TIES departs from mergekit's, shown on our ops."""
    # density semantics: k = int(density·n); 0 keeps nothing (mergekit keeps max(1, k)), ties at the threshold all kept
    assert ops.magnitude_threshold(torch.tensor([3.0, -1.0, 2.0]), 0.2) == float("inf")
    tied = torch.tensor([1.0, -1.0, 1.0, 0.5])
    assert int((ops.magnitude_prune(tied, 0.25) != 0).sum()) == 3  # mergekit's argsort keeps exactly 1
    # sign election on the unweighted trimmed mass, weights applied after (mergekit weights first):
    # deltas +1 and −0.6 with weights 1 and 2: unweighted mass +0.4 elects +, weighted mass −0.2 would elect −
    merged = ops.ties([torch.tensor([1.0]), torch.tensor([-0.6])], density=1.0, weights=[1.0, 2.0])
    assert float(merged) == 1.0
    # disjoint mean divides by the number of agreeing tasks, not by Σ weight·agree: (2·1 + 1·3) / 2
    merged = ops.ties([torch.tensor([1.0]), torch.tensor([3.0])], density=1.0, weights=[2.0, 1.0])
    assert float(merged) == 2.5
