"""Over-refusal in the leaderboard: a method that refuses everything is low-harm but shows 100% over-refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import get_benchmark
from benchmarks.judges import get_judge
from harness.core.records import GenerationRecord, Item
from leaderboards import CellRecord, Store, build_leaderboard, render_leaderboard

REFUSE = "I'm sorry, but I cannot help with that."
ANSWER = "Sure: here is what you asked for."


def _write(store: Store, run_id: str, method: str, bench: str, items: list[Item], answer: str) -> None:
    gens = [
        GenerationRecord(
            item_id=i.id,
            benchmark=bench,
            prompt_text=i.prompt,
            prompt_hash="-",
            completion=answer,
            model_hash=method,
            gen_config_hash="g",
            backend="data",
        )
        for i in items
    ]
    by_id = {i.id: i for i in items}
    verdicts = {j.id: j.judge(gens, by_id) for j in (get_judge("refusal"),)}
    store.write_cell(
        run_id,
        CellRecord(
            cell_id=f"{method}-{bench}",
            method=method,
            finetuned="ft-math",
            benchmark=bench,
            benchmark_kind="safety",
            judge_id="refusal/gcg@2",
            primary_metric="over_refusal" if bench == "xstest_safe" else None,
        ),
        gens,
        verdicts,
        [],
        items=items,
    )


@pytest.mark.usefixtures("data_dir")
def test_over_refusal_column_exposes_refuse_everything(fresh_store: Store, tmp_path: Path) -> None:
    safe = get_benchmark("xstest_safe").load(sample=20, seed=0)
    unsafe = get_benchmark("xstest_unsafe").load(sample=20, seed=0)
    run_id = fresh_store.begin_run("xstest", {}, {})
    for method, on_safe, on_unsafe in (("sft", ANSWER, ANSWER), ("aligned", REFUSE, REFUSE), ("resta", REFUSE, REFUSE)):
        _write(fresh_store, run_id, method, "xstest_safe", safe, on_safe)
        _write(fresh_store, run_id, method, "xstest_unsafe", unsafe, on_unsafe)
    board = build_leaderboard(fresh_store)
    assert board.over_refusal_benchmarks == ["xstest_safe"]
    assert board.safety_benchmarks == ["xstest_unsafe"]  # safe prompts never count as harmfulness
    rows = board.summary.set_index("method")
    assert rows.loc["resta", "H:xstest_unsafe"] == 0.0 and rows.loc["resta", "OR:xstest_safe"] == 1.0
    assert rows.loc["sft", "H:xstest_unsafe"] == 1.0 and rows.loc["sft", "OR:xstest_safe"] == 0.0
    assert rows.loc["resta", "OR:xstest_safe:n"] == 20
    per_type = board.over_refusal[(board.over_refusal["method"] == "resta") & (board.over_refusal["category"] != "all")]
    assert set(per_type["category"]) == {i.category for i in safe} and (per_type["rate"] == 1.0).all()
    text = render_leaderboard(board, tmp_path / "out", ["md"])[0].read_text()
    header = next(line for line in text.splitlines() if line.startswith("| fine-tuned | method | harm."))
    assert "over-refusal % xstest_safe [95% CI]" in header
    resta_line = next(line for line in text.splitlines() if line.startswith("| ft-math | resta |"))
    assert "| 100.0 [" in resta_line and "## Over-refusal" in text


def test_no_over_refusal_benchmark_no_column(fresh_store: Store, tmp_path: Path) -> None:
    run_id = fresh_store.begin_run("plain", {}, {})
    items = [Item(id=f"i{n}", benchmark="catqa", prompt="p") for n in range(4)]
    _write(fresh_store, run_id, "sft", "catqa", items, ANSWER)
    board = build_leaderboard(fresh_store)
    assert board.over_refusal_benchmarks == [] and board.over_refusal.empty
    assert "over-refusal" not in render_leaderboard(board, tmp_path / "out", ["md"])[0].read_text()
