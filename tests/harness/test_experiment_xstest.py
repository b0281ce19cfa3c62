"""XSTest through the matrix runner: over-refusal is scored from the refusal judge's verdicts, never a content judge's."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.experiment import run_experiment
from harness.testing import make_finetune
from tests.harness.test_experiment import write_experiment


@pytest.fixture(scope="module")
def small_zoo(tiny_llama_factory, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xstest_zoo")
    base = tiny_llama_factory("xstest-base")
    return {"aligned": base, "unaligned": make_finetune(base, root / "unaligned", seed=21),
            "math": make_finetune(base, root / "math", seed=22)}


def _models(zoo: dict[str, Path]) -> dict:
    return {"aligned": {"path": str(zoo["aligned"])}, "unaligned": {"path": str(zoo["unaligned"])},
            "finetuned": [{"name": "math", "path": str(zoo["math"]), "task": "math"}]}


def test_xstest_cells_score_over_refusal_with_the_refusal_judge(tmp_path, small_zoo, data_dir):
    from leaderboards import Store, build_leaderboard

    benchmarks = [{"name": "xstest_safe", "sample": 4}, {"name": "xstest_unsafe", "sample": 4}]
    # a model that refuses everything: 0% harmful on the unsafe prompts, 100% over-refusal on the safe ones;
    # the offline judge (first, so the harmfulness primary) must not be read as refusals
    refuse_all = {"backend": "dummy", "max_new_tokens": 8,
                  "backend_options": {"responses": ["I'm sorry, but I cannot help with that request."]}}
    path = write_experiment(tmp_path, small_zoo, models=_models(small_zoo), benchmarks=benchmarks,
                            methods=[{"name": "sft"}, {"name": "aligned"}], judges=["offline", "refusal"],
                            generation=refuse_all)
    result = run_experiment(path, progress=False)
    board = build_leaderboard(Store(result.store_location), result.run_id)
    assert board.over_refusal_benchmarks == ["xstest_safe"] and board.safety_benchmarks == ["xstest_unsafe"]
    assert set(board.summary["OR:xstest_safe:n"]) == {4}
    assert set(board.summary["OR:xstest_safe"]) == {1.0}
    assert set(board.over_refusal["judge_id"]) == {"refusal/gcg@2"}


def test_xstest_safe_without_a_refusal_judge_is_a_config_error(tmp_path, small_zoo, data_dir):
    path = write_experiment(tmp_path, small_zoo, models=_models(small_zoo), benchmarks=[{"name": "xstest_safe", "sample": 2}],
                            methods=[{"name": "sft"}], judges=["offline"])
    with pytest.raises(ConfigError, match="over-refusal: add the refusal judge"):
        run_experiment(path, progress=False)
