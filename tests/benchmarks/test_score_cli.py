"""`realign score --model`: the model-reading scorers (XCOPA, task_nll) and the lm-eval bridge from the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import get_benchmark
from benchmarks.scoring import answer_nll, loglik_accuracy
from harness.core.records import Score, read_jsonl
from harness.testing import make_lora_adapter
from tests.benchmarks.test_scoring import xcopa_lm_eval_task
from tests.cli import run


def printed(out: str, metric: str) -> float:
    match = re.search(rf"{re.escape(metric)}\s+all\s+(-?[0-9.]+)", out)
    assert match, out
    return float(match.group(1))


@pytest.fixture(scope="module")
def tiny(tiny_llama_factory) -> Path:
    return tiny_llama_factory("score-cli", seed=5)


def test_xcopa_accuracy_from_the_cli(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "scores.jsonl"
    code, out, err = run(
        ["score", "--benchmark", "xcopa_zh", "--model", str(tiny), "--limit", "12", "--out", str(out_file)], capsys
    )
    assert code == 0, err
    expected = loglik_accuracy(str(tiny), get_benchmark("xcopa_zh").load(limit=12))
    assert printed(out, "acc") == pytest.approx(expected.value, abs=1e-4)
    (row,) = read_jsonl(out_file, Score)
    assert row.benchmark == "xcopa_zh" and row.metric == "acc" and row.n == 12 and row.value == expected.value


def test_task_nll_with_and_without_an_adapter(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = get_benchmark("task_nll").load(categories=["code"], limit=3)
    base = ["score", "--benchmark", "task_nll", "--category", "code", "--limit", "3", "--model", str(tiny)]
    code, out, err = run(base, capsys)
    assert code == 0, err
    plain = printed(out, "nll")
    assert plain == pytest.approx(answer_nll(str(tiny), items).value, abs=1e-4)
    adapter = make_lora_adapter(tiny, tmp_path / "lora", seed=1, r=4, target_modules=["q_proj", "v_proj"])
    code, out, err = run([*base, "--adapter", str(adapter)], capsys)
    assert code == 0, err
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), str(adapter)).merge_and_unload()
    expected = answer_nll((merged.eval(), AutoTokenizer.from_pretrained(tiny)), items).value
    assert printed(out, "nll") == pytest.approx(expected, abs=1e-4) and abs(expected - plain) > 1e-4


def test_lm_eval_task_from_the_cli(
    tiny: Path, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task = xcopa_lm_eval_task(tmp_path, data_dir)
    code, out, err = run(["score", "--lm-eval-task", str(task), "--model", str(tiny), "--limit", "8"], capsys)
    assert code == 0, err
    ours = loglik_accuracy(str(tiny), get_benchmark("xcopa_zh").load(limit=8))
    assert "xcopa_zh_local" in out and printed(out, "acc/none") == pytest.approx(ours.value, abs=1e-4)


def test_model_scoring_errors_are_one_line(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["score", "--benchmark", "catqa", "--model", str(tiny)], capsys)
    assert code == 2 and "benchmark 'catqa' is scored from saved generations" in err and "realign generate" in err
    code, _, err = run(["score", "--lm-eval-task", str(tmp_path)], capsys)
    assert code == 2 and "--lm-eval-task runs on a model: give --model DIR" in err
    code, _, err = run(
        ["score", "--benchmark", "xcopa_zh", "--lm-eval-task", str(tmp_path), "--model", str(tiny)], capsys
    )
    assert code == 2 and "exactly one of --benchmark and --lm-eval-task" in err
    code, _, err = run(["score", "--model", str(tmp_path / "nowhere"), "--benchmark", "xcopa_zh"], capsys)
    assert code == 2 and "model not found" in err
    code, _, err = run(["score"], capsys)
    assert code == 2 and "give --benchmark" in err
    code, _, err = run(["score", "--benchmark", "xcopa_zh"], capsys)
    assert code == 2 and "or --model for a benchmark scored from the model" in err


def test_a_spec_path_benchmark_scores_the_model_from_the_cli(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The spec's own name is registered nowhere: scoring must use the benchmark the CLI loaded."""
    (tmp_path / "answers.jsonl").write_text(
        '{"prompt": "Say hi.", "reference": "Hi there."}\n{"prompt": "Count to two.", "reference": "One, two."}\n'
    )
    spec = tmp_path / "my_nll.yaml"
    spec.write_text("name: my_nll\nkind: utility\ndefault_scorer: nll\nsources:\n  - {path: answers.jsonl}\n")
    code, out, err = run(["score", "--benchmark", str(spec), "--model", str(tiny)], capsys)
    assert code == 0, err
    assert printed(out, "nll") == pytest.approx(answer_nll(str(tiny), get_benchmark(spec).load()).value, abs=1e-4)
