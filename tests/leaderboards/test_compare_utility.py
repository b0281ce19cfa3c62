"""`realign compare` on utility: per-item GSM8K / pass@k / NLL scores, paired by method *and* parameters.

The stores are written from synthetic generations of real GSM8K items, scored by the real scorers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from benchmarks import get_benchmark
from benchmarks.scoring import pass_at_k_item_scores, pass_at_k_scores, score_with_items
from harness.cli import cli
from harness.core.hashing import hash_value
from harness.core.records import GenerationRecord, Item, ItemScore, Score
from leaderboards import CellRecord, Store, collect_provenance, compare_runs

pytestmark = pytest.mark.usefixtures("data_dir")
N = 40


@pytest.fixture(scope="module")
def gsm8k_items() -> list[Item]:
    return get_benchmark("gsm8k").load(limit=N)


def _cell(method: str, label: str, params: dict[str, Any], benchmark: str, salt: str) -> CellRecord:
    return CellRecord(
        cell_id=hash_value([method, label, params, benchmark, salt], 32),
        method=method,
        method_label=label,
        params=params,
        finetuned="math",
        task="math",
        benchmark=benchmark,
        benchmark_kind="utility",
    )


def _gsm8k_store(
    path: Path,
    items: list[Item],
    wrong: Iterable[int] = (),
    *,
    methods: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
) -> Path:
    """One run: per method, generations answering every item right except the ``wrong`` indices,
    scored by the real GSM8K scorer into aggregates and per-item scores."""
    wrong = set(wrong)
    store = Store(path)
    run_id = store.begin_run("gsm8k", {"salt": str(path)}, collect_provenance(device="cpu (synthetic)"))
    for label, (method, params) in (methods or {"resta(gamma=0.5)": ("resta", {"gamma": 0.5})}).items():
        gens = [
            GenerationRecord(
                item_id=item.id,
                benchmark="gsm8k",
                prompt_text=item.prompt,
                prompt_hash=hash_value(item.prompt),
                completion=f"Step by step.\n#### {int(item.reference or 0) + 1 if i in wrong else item.reference}",
                model_hash=hash_value(label),
                gen_config_hash="g",
                backend="dummy",
                num_tokens=6,
            )
            for i, item in enumerate(items)
        ]
        by_id = {item.id: item for item in items}
        scores, per_item = score_with_items(get_benchmark("gsm8k"), gens, None, by_id)
        store.write_cell(
            run_id,
            _cell(method, label, params, "gsm8k", str(path)),
            gens,
            [],
            scores,
            item_scores=per_item,
            items=by_id,
        )
    store.finish_run(run_id, "done")
    store.close()
    return path


def test_planted_gsm8k_regression_exits_1_and_no_difference_exits_0(tmp_path: Path, gsm8k_items: list[Item]) -> None:
    base = _gsm8k_store(tmp_path / "base.sqlite", gsm8k_items, wrong=range(0, 4))
    worse = _gsm8k_store(tmp_path / "worse.sqlite", gsm8k_items, wrong=range(0, 19))  # 15 more wrong
    same = _gsm8k_store(tmp_path / "same.sqlite", gsm8k_items, wrong=range(0, 4))
    report_file = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli, ["compare", str(base), str(worse), "--metric", "gsm8k_flexible", "--json", str(report_file)]
    )
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output and "gsm8k gsm8k_flexible" in result.output
    report = json.loads(report_file.read_text())
    (flex,) = report["results"]
    assert flex["metric"] == "gsm8k_flexible" and flex["test"] == "exact" and flex["higher_is_worse"] is False
    assert flex["worse_flips"] == 15 and flex["better_flips"] == 0
    assert flex["p_value"] == pytest.approx(2 * 0.5**15)
    assert flex["baseline_mean"] == pytest.approx(36 / 40) and flex["candidate_mean"] == pytest.approx(21 / 40)
    assert sorted(f["item_id"] for f in report["flipped"]) == sorted(i.id for i in gsm8k_items[4:19])
    assert "#### " in report["flipped"][0]["candidate_completion"]
    # both GSM8K filters are tracked without --metric: both regress
    both = compare_runs(str(base), str(worse))
    assert sorted(r.metric for r in both.regressions) == ["gsm8k_flexible", "gsm8k_strict"]

    unchanged = CliRunner().invoke(cli, ["compare", str(base), str(same), "--metric", "gsm8k_flexible"])
    assert unchanged.exit_code == 0, unchanged.output
    assert "no significant regression" in unchanged.output
    better = compare_runs(str(worse), str(base), metrics=["gsm8k_flexible"])
    assert better.results[0].verdict == "better" and better.exit_code == 0


def test_cells_pair_on_method_and_parameters_not_the_label(tmp_path: Path, gsm8k_items: list[Item]) -> None:
    base = _gsm8k_store(tmp_path / "b.sqlite", gsm8k_items, methods={"resta": ("resta", {"gamma": 0.5})})
    # the same label for another gamma: a different method variant, never paired
    other = _gsm8k_store(
        tmp_path / "o.sqlite", gsm8k_items, wrong=range(20), methods={"resta": ("resta", {"gamma": 1.0})}
    )
    report = compare_runs(str(base), str(other))
    assert report.results == [] and not report.regressed
    assert any(
        'resta: not paired, its parameters differ (baseline {"gamma":0.5}, candidate {"gamma":1.0})' in n
        for n in report.notes
    ), report.notes
    # another label for the same method and parameters: paired, named by the baseline's label
    renamed = _gsm8k_store(
        tmp_path / "r.sqlite", gsm8k_items, wrong=range(20), methods={"resta(gamma=0.5)": ("resta", {"gamma": 0.5})}
    )
    paired = compare_runs(str(base), str(renamed), by=["benchmark", "method"])
    assert {r.group["method"] for r in paired.results} == {"resta"} and paired.regressed
    # two variants in both runs: each meets its own
    two = {"resta(gamma=0.5)": ("resta", {"gamma": 0.5}), "resta(gamma=1.0)": ("resta", {"gamma": 1.0})}
    b2 = _gsm8k_store(tmp_path / "b2.sqlite", gsm8k_items, methods=two)
    c2 = _gsm8k_store(tmp_path / "c2.sqlite", gsm8k_items, methods=two)
    both = compare_runs(str(b2), str(c2), by=["method"])
    assert {(r.group["method"], r.n) for r in both.results if r.metric == "gsm8k_strict"} == {
        ("resta(gamma=0.5)", N),
        ("resta(gamma=1.0)", N),
    }


def _continuous_store(
    path: Path, metric: str, values: list[float], *, higher_is_better: bool, aggregate: bool = True
) -> Path:
    store = Store(path)
    run_id = store.begin_run("cont", {"p": str(path)}, collect_provenance(device="cpu (synthetic)"))
    per_item = [ItemScore(item_id=f"it-{i:02d}", metric=metric, value=v) for i, v in enumerate(values)]
    scores = (
        [
            Score(
                benchmark="task_nll",
                metric=metric,
                value=sum(values) / len(values),
                n=len(values),
                higher_is_better=higher_is_better,
            )
        ]
        if aggregate
        else []
    )
    store.write_cell(run_id, _cell("sft", "sft", {}, "task_nll", str(path)), [], [], scores, item_scores=per_item)
    store.finish_run(run_id, "done")
    store.close()
    return path


def test_continuous_nll_regression_uses_wilcoxon_or_bootstrap(tmp_path: Path) -> None:
    base_values = [1.0 + 0.05 * (i % 7) for i in range(30)]
    base = _continuous_store(tmp_path / "b.sqlite", "nll", base_values, higher_is_better=False)
    worse = _continuous_store(
        tmp_path / "w.sqlite",
        "nll",
        [v + 0.2 + 0.01 * (i % 3) for i, v in enumerate(base_values)],
        higher_is_better=False,
    )
    noise = _continuous_store(
        tmp_path / "n.sqlite",
        "nll",
        [v + (0.01 if i % 2 else -0.01) for i, v in enumerate(base_values)],
        higher_is_better=False,
    )
    result = CliRunner().invoke(cli, ["compare", str(base), str(worse), "--metric", "nll"])
    assert result.exit_code == 1, result.output
    report = compare_runs(str(base), str(worse))
    (nll,) = report.results
    assert nll.test == "wilcoxon" and nll.higher_is_worse and nll.verdict == "worse"
    assert nll.worse_flips == 30 and nll.p_value < 1e-5 and nll.diff == pytest.approx(0.21, abs=0.01)
    from scipy.stats import wilcoxon

    diffs = [0.2 + 0.01 * (i % 3) for i in range(30)]  # what the test sees: candidate − baseline
    assert nll.p_value == pytest.approx(wilcoxon(diffs).pvalue, rel=1e-3)
    assert report.flipped.empty  # continuous items move in counts, not as a flood of "flips"
    boot = compare_runs(str(base), str(worse), continuous="bootstrap", resamples=500)
    assert boot.results[0].test == "bootstrap" and boot.results[0].verdict == "worse"
    assert boot.results[0].p_value == pytest.approx(1 / 501)
    # the same drop in NLL is an improvement: the direction is the scorer's, not the metric name's
    assert compare_runs(str(worse), str(base)).results[0].verdict == "better"
    assert CliRunner().invoke(cli, ["compare", str(base), str(noise), "--continuous", "bootstrap"]).exit_code == 0
    assert not compare_runs(str(base), str(noise)).regressed
    with pytest.raises(Exception, match="--continuous"):
        compare_runs(str(base), str(noise), continuous="ttest")


def test_pass_at_k_per_problem_and_a_metric_without_direction(tmp_path: Path) -> None:
    good = {f"HumanEval/{i}": [True, i % 2 == 0, True, False] for i in range(24)}
    bad = {pid: [False] * 4 if i < 16 else r for i, (pid, r) in enumerate(good.items())}

    def write(path: Path, results: dict[str, list[bool]]) -> Path:
        store = Store(path)
        run_id = store.begin_run("he", {"p": str(path)}, collect_provenance(device="cpu (synthetic)"))
        store.write_cell(
            run_id,
            _cell("sft", "sft", {}, "humaneval", str(path)),
            [],
            [],
            pass_at_k_scores(results, ks=(1,), benchmark="humaneval"),
            item_scores=pass_at_k_item_scores(results, ks=(1,)),
        )
        store.finish_run(run_id, "done")
        store.close()
        return path

    report = compare_runs(str(write(tmp_path / "g.sqlite", good)), str(write(tmp_path / "b.sqlite", bad)))
    (p1,) = report.results
    assert p1.metric == "pass@1" and p1.test == "wilcoxon" and p1.verdict == "worse" and p1.worse_flips == 16
    # a per-item metric no scorer row describes: its direction is unknown, so it is not tested
    x = _continuous_store(tmp_path / "x.sqlite", "mystery", [1.0, 2.0, 3.0], higher_is_better=True, aggregate=False)
    y = _continuous_store(tmp_path / "y.sqlite", "mystery", [3.0, 4.0, 5.0], higher_is_better=True, aggregate=False)
    odd = compare_runs(str(x), str(y))
    assert odd.results == [] and any(
        "without a scorer row giving their direction left out: mystery" in n for n in odd.notes
    )
