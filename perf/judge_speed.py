"""Speed and peak memory of the default offline judge (a benchmark, not a timed test).

    PYTHONPATH=. REALIGN_DATA_DIR=../shared/data .venv/bin/python perf/judge_speed.py [--judge NAME] [--n 2000]

Judges N real responses (gptfuzz evaluate.csv + JADE-zh dev, cycled) in one process and prints
responses/s (load time excluded, reported apart) and the process's peak RSS (ru_maxrss).
Targets for the default judge: >= 20 responses/s on 2 cores, <= 3 GB peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judge", default=None, help="judge name (default: the default judge)")
    parser.add_argument("--n", type=int, default=2000, help="responses to judge")
    args = parser.parse_args()

    from benchmarks.judges import DEFAULT_JUDGE, get_judge
    from benchmarks.judges._multilingual import labelled_sets
    from harness.core.records import GenerationRecord, Item

    _, dev = labelled_sets()
    pool = dev["gptfuzz_eval"] + dev["jade_dev"]
    examples = [pool[i % len(pool)] for i in range(args.n)]
    items = {f"s-{i}": Item(id=f"s-{i}", benchmark="speed", prompt=e.prompt) for i, e in enumerate(examples)}
    gens = [
        GenerationRecord(
            item_id=f"s-{i}",
            benchmark="speed",
            prompt_text=e.prompt,
            prompt_hash="-",
            completion=e.response,
            model_hash="-",
            gen_config_hash="-",
            backend="data",
        )
        for i, e in enumerate(examples)
    ]
    started = time.perf_counter()
    judge = get_judge(args.judge or DEFAULT_JUDGE)
    loaded = time.perf_counter()
    verdicts = judge.judge(gens, items)
    done = time.perf_counter()
    assert len(verdicts) == len(gens)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"judge {judge.id}: load {loaded - started:.2f} s; {len(gens)} responses in {done - loaded:.2f} s = "
        f"{len(gens) / (done - loaded):.1f} responses/s; peak RSS {peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
