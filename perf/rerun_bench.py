"""Harness overhead of an unchanged re-run (target: 0 merges, 0 generations, <= 5 s).

Runs EXPERIMENT once (filling the cache if needed), then again, and prints what the second run
did and how long it took, in-process (harness time, excluding interpreter start-up) and as a
fresh `realign run` process (what a user waits for).

    python perf/rerun_bench.py [configs/example.yaml]
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    from harness.experiment import run_experiment

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "configs/example.yaml")
    t0 = time.monotonic()
    first = run_experiment(path, progress=False)
    print(f"first run:  {first.stats.summary()}  ({time.monotonic() - t0:.1f} s)")
    t0 = time.monotonic()
    second = run_experiment(path, progress=False)
    harness_s = time.monotonic() - t0
    counts = second.stats.counts
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "harness", "run", str(path), "--no-progress"], check=True, capture_output=True
    )
    process_s = time.monotonic() - t0
    print(f"second run: {second.stats.summary()}")
    print(f"{'metric':34s} {'value':>8s} {'target':>8s}")
    print(f"{'merges on re-run':34s} {counts['merge_done']:8d} {0:8d}")
    print(f"{'generations on re-run':34s} {counts['generate_done'] + counts['generate_resumed']:8d} {0:8d}")
    print(f"{'harness time, in-process (s)':34s} {harness_s:8.2f} {5.0:8.1f}")
    print(f"{'`realign run` process (s)':34s} {process_s:8.2f} {'-':>8s}")


if __name__ == "__main__":
    main()
