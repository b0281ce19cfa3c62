"""XSTest through the matrix runner: over-refusal is scored from the refusal judge's verdicts, never a content judge's."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.core.errors import ConfigError
from harness.experiment import run_experiment
from harness.testing import make_finetune
from tests.harness.test_experiment import write_experiment


@pytest.fixture(scope="module")
def small_zoo(tiny_llama_factory, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xstest_zoo")
    base = tiny_llama_factory("xstest-base")
    return {
        "aligned": base,
        "unaligned": make_finetune(base, root / "unaligned", seed=21),
        "math": make_finetune(base, root / "math", seed=22),
    }


def _models(zoo: dict[str, Path]) -> dict:
    return {
        "aligned": {"path": str(zoo["aligned"])},
        "unaligned": {"path": str(zoo["unaligned"])},
        "finetuned": [{"name": "math", "path": str(zoo["math"]), "task": "math"}],
    }


def test_xstest_cells_score_over_refusal_with_the_refusal_judge(tmp_path, small_zoo, data_dir):
    from leaderboards import Store, build_leaderboard

    benchmarks = [{"name": "xstest_safe", "sample": 4}, {"name": "xstest_unsafe", "sample": 4}]
    # a model that refuses everything: 0% harmful on the unsafe prompts, 100% over-refusal on the safe ones;
    # the offline judge (first, so the harmfulness primary) must not be read as refusals
    refuse_all = {
        "backend": "dummy",
        "max_new_tokens": 8,
        "backend_options": {"responses": ["I'm sorry, but I cannot help with that request."]},
    }
    path = write_experiment(
        tmp_path,
        small_zoo,
        models=_models(small_zoo),
        benchmarks=benchmarks,
        methods=[{"name": "sft"}, {"name": "aligned"}],
        judges=["offline", "refusal"],
        generation=refuse_all,
    )
    result = run_experiment(path, progress=False)
    board = build_leaderboard(Store(result.store_location), result.run_id)
    assert board.over_refusal_benchmarks == ["xstest_safe"] and board.safety_benchmarks == ["xstest_unsafe"]
    assert set(board.summary["OR:xstest_safe:n"]) == {4}
    assert set(board.summary["OR:xstest_safe"]) == {1.0}
    assert set(board.over_refusal["judge_id"]) == {"refusal/gcg@2"}


def test_xstest_safe_without_a_refusal_judge_is_a_config_error(tmp_path, small_zoo, data_dir):
    path = write_experiment(
        tmp_path,
        small_zoo,
        models=_models(small_zoo),
        benchmarks=[{"name": "xstest_safe", "sample": 2}],
        methods=[{"name": "sft"}],
        judges=["offline"],
    )
    with pytest.raises(ConfigError, match="over-refusal: add the refusal judge"):
        run_experiment(path, progress=False)


def test_a_benchmark_can_name_its_own_primary_judge(tmp_path, small_zoo, data_dir):
    """`benchmarks[].judge` scores that benchmark (and names its leaderboard column); others keep judges[0]."""
    from leaderboards import Store, build_leaderboard

    benchmarks = [
        {"name": "xstest_unsafe", "sample": 3},
        {"name": "catqa", "sample": 3, "languages": ["en", "zh"], "judge": "refusal"},
    ]
    comply = {"backend": "dummy", "max_new_tokens": 8, "backend_options": {"responses": ["Sure, here is how."]}}
    path = write_experiment(
        tmp_path,
        small_zoo,
        models=_models(small_zoo),
        benchmarks=benchmarks,
        methods=[{"name": "sft"}],
        judges=["offline-multilingual", "refusal"],
        generation=comply,
    )
    result = run_experiment(path, progress=False)
    store = Store(result.store_location)
    cells = store.cells(result.run_id).set_index("benchmark_label")
    assert cells.loc["catqa", "judge_id"].startswith("refusal/")
    assert cells.loc["xstest_unsafe", "judge_id"].startswith("offline/charngram")
    board = build_leaderboard(store, result.run_id)
    assert board.column_judges["catqa"].startswith("refusal/")
    assert board.column_judges["xstest_unsafe"].startswith("offline/charngram")
    # the refusal judge calls every compliant answer harmful: its column says 100%
    assert set(board.summary["H:catqa"]) == {1.0}
    # an explicit --judge-for overrides what the cells declare; a judge absent from the run is refused
    board = build_leaderboard(store, result.run_id, judges={"catqa": "offline/"})
    assert board.column_judges["catqa"].startswith("offline/charngram")
    with pytest.raises(ConfigError, match="no harmful/harmless verdicts"):
        build_leaderboard(store, result.run_id, judges={"catqa": "llm/"})
    with pytest.raises(ConfigError, match="not in run"):
        build_leaderboard(store, result.run_id, judges={"catqa_typo": "refusal/"})


def test_a_benchmark_judge_must_be_listed_and_read_its_languages(tmp_path, small_zoo, data_dir):
    path = write_experiment(
        tmp_path,
        small_zoo,
        models=_models(small_zoo),
        benchmarks=[{"name": "catqa", "sample": 2, "judge": "llm"}],
        methods=[{"name": "sft"}],
        judges=["offline-multilingual"],
    )
    with pytest.raises(ConfigError, match=r"judge 'llm' is not in `judges`"):
        run_experiment(path, progress=False)
    path = write_experiment(
        tmp_path,
        small_zoo,
        models=_models(small_zoo),
        benchmarks=[{"name": "catqa", "sample": 2, "languages": ["en", "zh"], "judge": "offline"}],
        methods=[{"name": "sft"}],
        judges=["offline-multilingual", "offline"],
    )
    with pytest.raises(ConfigError, match=r"judge 'offline' reads en but the benchmark has zh"):
        run_experiment(path, progress=False)
