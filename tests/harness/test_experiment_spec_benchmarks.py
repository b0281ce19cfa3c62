"""A benchmark given by spec path in an experiment: the plan validates the same object that scores it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harness.core.errors import ConfigError
from harness.experiment import run_experiment
from leaderboards import Store


def _experiment(tmp_path: Path, model: Path, scorer: str) -> Path:
    """An experiment in ``tmp_path/exp`` naming ``my_gsm.yaml`` (next to it) by relative path."""
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "rows.jsonl").write_text(
        "".join(json.dumps({"prompt": f"What is {n} + {n}?", "reference": str(2 * n)}) + "\n" for n in range(3))
    )
    (folder / "my_gsm.yaml").write_text(
        yaml.safe_dump(
            {"name": "my_gsm", "kind": "utility", "default_scorer": scorer, "sources": [{"path": "rows.jsonl"}]}
        )
    )
    path = folder / "experiment.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "spec-path",
                "output_dir": str(tmp_path / "out"),
                "models": {
                    "aligned": {"path": str(model)},
                    "unaligned": {"path": str(model)},
                    "finetuned": [{"name": "ft", "path": str(model), "task": "math"}],
                },
                "methods": [{"name": "sft"}],
                "benchmarks": [{"name": "my_gsm.yaml"}],
                "generation": {"backend": "dummy", "max_new_tokens": 4},
            }
        )
    )
    return path


def test_a_spec_path_benchmark_with_an_unknown_scorer_fails_the_dry_run(
    tmp_path: Path, tiny_llama_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the plan never checked the scorer's name: the dry run passed and the run failed at scoring."""
    path = _experiment(tmp_path, tiny_llama_factory("spec-path"), scorer="gsm8")
    monkeypatch.chdir(tmp_path)  # the spec resolves relative to the experiment file, not the working directory
    with pytest.raises(
        ConfigError, match=r"(?s)my_gsm\.yaml.*default_scorer.*unknown scorer 'gsm8'.*did you mean 'gsm8k'"
    ):
        run_experiment(path, dry_run=True, progress=False)


def test_a_spec_path_benchmark_is_scored_by_its_own_scorer(
    tmp_path: Path, tiny_llama_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _experiment(tmp_path, tiny_llama_factory("spec-path"), scorer="gsm8k")
    monkeypatch.chdir(tmp_path)
    assert run_experiment(path, dry_run=True, progress=False).plan_rows
    result = run_experiment(path, progress=False)
    assert result.stats.counts["cell_stored"] == 1
    scores = Store(result.store_location).scores_frame(result.run_id)
    assert {"gsm8k_strict", "gsm8k_flexible"} <= set(scores["metric"])
    assert set(scores["benchmark"]) == {"my_gsm"}


def test_benchmark_options_are_a_typed_column_mapping_checked_at_parse_time() -> None:
    from harness.experiment import parse_experiment

    base = {
        "name": "x",
        "output_dir": "out",
        "models": {"aligned": {"path": "a"}, "finetuned": [{"name": "ft", "path": "f"}]},
        "methods": [{"name": "sft"}],
        "generation": {"backend": "dummy"},
    }
    exp = parse_experiment({**base, "benchmarks": [{"name": "csv", "options": {"prompt": "Behavior", "id": "BID"}}]})
    entry = exp.benchmarks[0]
    assert entry.options.prompt == "Behavior" and entry.options.given() == {"prompt": "Behavior", "id": "BID"}
    assert entry.model_dump(mode="json")["options"] == {"prompt": "Behavior", "id": "BID"}  # cell identity unchanged
    with pytest.raises(
        ConfigError,
        match=r"benchmarks\.0\.options.*benchmark 'csv': unknown option 'promt' "
        r"\(did you mean 'prompt'\?\)",
    ):
        parse_experiment({**base, "benchmarks": [{"name": "csv", "options": {"promt": "Behavior"}}]})
    with pytest.raises(ConfigError, match=r"benchmark 'catqa': field prompt: .*expected a column name"):
        parse_experiment({**base, "benchmarks": [{"name": "catqa", "options": {"prompt": 3}}]})


def test_judge_options_are_each_judges_own_model_checked_at_parse_time() -> None:
    from benchmarks.judges import cached_judge, get_judge_class
    from harness.experiment import parse_experiment

    base = {
        "name": "x",
        "output_dir": "out",
        "methods": [{"name": "sft"}],
        "benchmarks": [{"name": "catqa"}],
        "models": {"aligned": {"path": "a"}, "finetuned": [{"name": "ft", "path": "f"}]},
    }
    refusal = get_judge_class("refusal")
    option = next(iter(refusal.Options.model_fields))
    value = refusal.Options().model_dump()[option]
    exp = parse_experiment({**base, "judges": ["refusal"], "judge_options": {"refusal": {option: value}}})
    assert isinstance(exp.judge_options["refusal"], refusal.Options)
    assert exp.model_dump(mode="json")["judge_options"] == {"refusal": {option: value}}  # as given
    assert cached_judge("refusal", exp.judge_options["refusal"]) is cached_judge("refusal", {option: value})
    with pytest.raises(ConfigError, match=r"judge_options.*judge 'refusal': unknown option 'nope'"):
        parse_experiment({**base, "judges": ["refusal"], "judge_options": {"refusal": {"nope": 1}}})
    with pytest.raises(ConfigError, match=r"judge_options.*unknown judge 'refusl'"):
        parse_experiment({**base, "judges": ["refusal"], "judge_options": {"refusl": {}}})
