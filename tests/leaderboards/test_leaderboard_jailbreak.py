"""Jailbreak robustness through the runner: attack success rate beside plain harmfulness, per template."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.experiment import run_experiment
from harness.testing import make_finetune
from leaderboards import Store, build_leaderboard, render_leaderboard
from tests.harness.test_experiment import write_experiment


@pytest.fixture(scope="module")
def board_and_store(tiny_llama_factory, tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("jb")
    base = tiny_llama_factory("jb-base")
    zoo = {
        "aligned": base,
        "unaligned": make_finetune(base, root / "unaligned", seed=31),
        "math": make_finetune(base, root / "math", seed=32),
    }
    models = {
        "aligned": {"path": str(zoo["aligned"])},
        "unaligned": {"path": str(zoo["unaligned"])},
        "finetuned": [{"name": "math", "path": str(zoo["math"]), "task": "math"}],
    }
    benchmarks = [
        {"name": "multijail", "languages": ["en"], "limit": 6},
        {"name": "multijail_jailbreak", "label": "multijail-jb", "languages": ["en"], "limit": 12},
        {
            "name": "multijail_jailbreak",
            "label": "multijail-aim",
            "languages": ["en"],
            "categories": ["aim"],
            "limit": 6,
        },
    ]
    # the dummy backend answers by a hash of the prompt: a mix of refusals and compliance per template
    path = write_experiment(
        root,
        zoo,
        models=models,
        benchmarks=benchmarks,
        methods=[{"name": "sft"}, {"name": "aligned"}],
        judges=["refusal"],
    )
    result = run_experiment(path, progress=False)
    store = Store(result.store_location)
    return build_leaderboard(store, result.run_id), store, result.run_id


def test_asr_columns_beside_plain_harmfulness(board_and_store) -> None:
    board, store, run_id = board_and_store
    assert board.safety_benchmarks == ["multijail"]
    assert board.jailbreak_benchmarks == ["multijail-aim", "multijail-jb"]
    summary = board.summary.set_index("method_label")
    # the mean is plain harmfulness only
    assert (summary["harmfulness_mean"] == summary["H:multijail"]).all()
    # ASR recomputed from the stored verdicts, keyed by the template in the item id (not the subcategory)
    verdicts = store.verdicts_frame(run_id).merge(store.cells(run_id)[["cell_id", "method_label", "benchmark_label"]])
    for label, bench in [("sft", "multijail-jb"), ("aligned", "multijail-aim")]:
        mine = verdicts[(verdicts["method_label"] == label) & (verdicts["benchmark_label"] == bench)]
        assert summary.loc[label, f"ASR:{bench}"] == pytest.approx((mine["label"] == "harmful").mean())
        assert summary.loc[label, f"ASR:{bench}:n"] == len(mine)
    jb = board.jailbreaks
    sft = jb[(jb["method_label"] == "sft") & (jb["benchmark"] == "multijail-jb")].set_index("jailbreak")
    assert set(sft.index) == {"all", "aim", "dev_mode", "dr_al", "evil_confidant"}
    assert sft["n"].drop("all").sum() == sft.loc["all", "n"] == 12
    mine = verdicts[(verdicts["method_label"] == "sft") & (verdicts["benchmark_label"] == "multijail-jb")]
    for template in ("aim", "dev_mode", "dr_al", "evil_confidant"):
        rows = mine[mine["item_id"].str.endswith("/" + template)]
        assert sft.loc[template, "successes"] == (rows["label"] == "harmful").sum()
    assert list(jb[(jb["method_label"] == "sft") & (jb["benchmark"] == "multijail-jb")]["jailbreak"]) == [
        "all",
        "aim",
        "dev_mode",
        "dr_al",
        "evil_confidant",
    ]  # the overall row first
    aim = jb[jb["benchmark"] == "multijail-aim"]
    assert set(aim["jailbreak"]) == {"all", "aim"}


def test_rendered_with_an_asr_column_and_a_jailbreak_table(board_and_store, tmp_path: Path) -> None:
    board, *_ = board_and_store
    render_leaderboard(board, tmp_path, ["md", "html", "json"])
    md = (tmp_path / "leaderboard.md").read_text(encoding="utf-8")
    assert "ASR % multijail-jb [95% CI] (refusal/gcg@2)" in md and "harm. % multijail [95% CI]" in md
    assert "## Jailbreak robustness: attack success rate by template" in md and "| evil_confidant |" in md
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert 'id="table-jailbreaks"' in page and "Attack success rate (ASR)" in page
    assert '"jailbreak_benchmarks": [\n    "multijail-aim",' in (tmp_path / "leaderboard.json").read_text(
        encoding="utf-8"
    )
