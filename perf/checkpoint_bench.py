"""Checkpoint I/O figures: streaming copy through CheckpointReader/CheckpointWriter vs safetensors' whole-file
load_file/save_file, side by side on one synthetic sharded bf16 checkpoint. Each case runs in its own
process so its peak RSS is its own.

    .venv/bin/python perf/checkpoint_bench.py [--gib 1.0] [--shard-mib 256]

Prints wall time, throughput and peak RSS growth over the process's baseline for each case.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path


def _rss_mib() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _make_input(root: Path, gib: float, shard_mib: int) -> Path:
    import torch

    from harness.core.checkpoints import CheckpointWriter

    tensor_elems = 16 * 2**20  # 32 MiB of bf16 per tensor
    count = max(1, round(gib * 2**30 / (2 * tensor_elems)))
    gen = torch.Generator().manual_seed(0)
    with CheckpointWriter(root / "input", max_shard_size=shard_mib * 2**20) as writer:
        for index in range(count):
            writer.add(f"layers.{index}.weight", torch.randn(tensor_elems, generator=gen).to(torch.bfloat16))
    return root / "input"


def _case(name: str, source: str, out: str, shard_mib: int, queue: mp.Queue) -> None:
    import torch  # noqa: F401  (import cost outside the timed region)
    from safetensors.torch import load_file, save_file

    from harness.core.checkpoints import CheckpointReader, CheckpointWriter

    baseline = _rss_mib()
    start = time.perf_counter()
    if name == "stream copy (ours)":
        reader = CheckpointReader(source)
        with CheckpointWriter(out, max_shard_size=shard_mib * 2**20) as writer:
            for tensor_name in reader.names():
                writer.add(tensor_name, reader.get(tensor_name))
    elif name == "whole-file load_file/save_file":
        Path(out).mkdir()
        for file in sorted(Path(source).glob("*.safetensors")):
            save_file(load_file(file), str(Path(out) / file.name), metadata={"format": "pt"})
    elif name == "stream read + fp32 sum (ours)":
        reader = CheckpointReader(source)
        for tensor_name in reader.names():
            reader.get(tensor_name).float().sum()
    queue.put({"case": name, "seconds": time.perf_counter() - start, "peak_rss_growth_mib": _rss_mib() - baseline})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB (bf16)")
    parser.add_argument("--shard-mib", type=int, default=256, help="shard size of input and output")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="checkpoint-bench-"))
    try:
        source = _make_input(root, args.gib, args.shard_mib)
        size_gib = sum(f.stat().st_size for f in source.glob("*.safetensors")) / 2**30
        ctx = mp.get_context("spawn")
        results = []
        for index, name in enumerate(
            ["stream copy (ours)", "whole-file load_file/save_file", "stream read + fp32 sum (ours)"]
        ):
            queue: mp.Queue = ctx.Queue()
            proc = ctx.Process(target=_case, args=(name, str(source), str(root / f"out{index}"), args.shard_mib, queue))
            proc.start()
            results.append(queue.get())
            proc.join()
        print(f"checkpoint: {size_gib:.2f} GiB bf16, shards of {args.shard_mib} MiB")
        print(f"{'case':34} {'seconds':>8} {'GiB/s':>7} {'peak RSS +MiB':>14}")
        for row in results:
            print(
                f"{row['case']:34} {row['seconds']:8.2f} {size_gib / row['seconds']:7.2f} "
                f"{row['peak_rss_growth_mib']:14.0f}"
            )
        print(json.dumps(results))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
