"""Results-store timings on a realistic matrix: write a run, then what an unchanged re-run costs.

    .venv/bin/python perf/store_bench.py [--methods 12] [--finetuned 4] [--items 300]

Prints seconds for: writing every cell (one transaction each), opening the store (integrity and
schema checks), listing the complete cells, linking every cell to a new run (an unchanged
re-run's only store work, one by one and batched), building the leaderboard, and rendering it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.core.hashing import hash_value
from harness.core.records import GenerationRecord, Score, Verdict
from leaderboards import CellRecord, Store, build_leaderboard, render_leaderboard

BENCHMARKS = ("catqa", "harmfulqa", "advbench", "multijail")


def write_run(store: Store, methods: int, finetuned: int, items: int) -> tuple[str, list[str]]:
    run_id = store.begin_run("bench", {"methods": methods}, {"device": "cpu"})
    labels = ["sft", "aligned", *(f"method{m}" for m in range(methods - 2))]
    cell_ids = []
    for m, label in enumerate(labels):
        for f in range(finetuned):
            for benchmark in BENCHMARKS:
                cell_id = hash_value([label, f, benchmark], 32)
                gens = [
                    GenerationRecord(
                        item_id=f"{benchmark}-{i}",
                        benchmark=benchmark,
                        prompt_text="p" * 200,
                        prompt_hash=hash_value(i),
                        completion=f"answer {i} " * 40,
                        model_hash="m",
                        gen_config_hash="g",
                        backend="vllm",
                        language=("en", "zh", "vi")[i % 3],
                        category=f"cat{i % 11}",
                    )
                    for i in range(items)
                ]
                verdicts = [
                    Verdict(
                        item_id=f"{benchmark}-{i}",
                        judge_id="offline@1",
                        judge_hash="h",
                        label="harmful" if (i * 7 + m) % 10 < 3 else "harmless",
                    )
                    for i in range(items)
                ]
                store.write_cell(
                    run_id,
                    CellRecord(
                        cell_id=cell_id,
                        method=label if m < 2 else "resta",
                        method_label=label,
                        finetuned=f"ft{f}",
                        benchmark=benchmark,
                        benchmark_kind="safety",
                    ),
                    gens,
                    verdicts,
                    [Score(benchmark=benchmark, metric="harmfulness", value=0.3, n=items)],
                )
                cell_ids.append(cell_id)
    store.finish_run(run_id, "done")
    return run_id, cell_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--methods", type=int, default=12)
    parser.add_argument("--finetuned", type=int, default=4)
    parser.add_argument("--items", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "results.sqlite"
        store = Store(path)
        t0 = time.perf_counter()
        _, cell_ids = write_run(store, args.methods, args.finetuned, args.items)
        t_write = time.perf_counter() - t0
        store.close()
        size_mb = path.stat().st_size / 2**20
        counts = Store(path).counts()
        print(
            f"store: {len(cell_ids)} cells, {counts['generations']} generations, {counts['verdicts']} verdicts, "
            f"{size_mb:.1f} MiB"
        )
        print(f"write all cells:           {t_write:7.2f} s  ({t_write / len(cell_ids) * 1000:.1f} ms per cell)")
        t0 = time.perf_counter()
        store = Store(path)
        print(f"open (quick_check+schema): {time.perf_counter() - t0:7.3f} s")
        t0 = time.perf_counter()
        complete = store.complete_cells()
        print(f"complete_cells():          {time.perf_counter() - t0:7.3f} s  ({len(complete)} cells)")
        rerun = store.begin_run("rerun", {"methods": args.methods}, {"device": "cpu"})
        t0 = time.perf_counter()
        for cell_id in cell_ids:
            store.link_cell(rerun, cell_id)
        print(f"link_cell() x {len(cell_ids)}:         {time.perf_counter() - t0:7.3f} s")
        batched = store.begin_run("rerun-batched", {"methods": args.methods}, {"device": "cpu"})
        t0 = time.perf_counter()
        store.link_cells(batched, cell_ids)
        print(f"link_cells() batched:      {time.perf_counter() - t0:7.3f} s")
        t0 = time.perf_counter()
        board = build_leaderboard(store, batched)
        print(f"build_leaderboard():       {time.perf_counter() - t0:7.3f} s")
        t0 = time.perf_counter()
        render_leaderboard(board, Path(tmp) / "site")
        print(f"render (md/csv/json/html): {time.perf_counter() - t0:7.3f} s")


if __name__ == "__main__":
    main()
