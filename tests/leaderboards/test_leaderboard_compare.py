"""`realign compare` as a CI gate: planted regressions fail it and name the flipped items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from lb_synth import N_ITEMS, build_store, harmful_items, item_id, write_synthetic_run

from harness.cli import cli, main
from harness.core.errors import ConfigError, StoreError
from leaderboards import Store, compare_runs

TARGET = ("resta[g=0.5]", "ft-code", "catqa")


def _harmless(label: str, finetuned: str, benchmark: str) -> list[str]:
    return sorted({item_id(benchmark, i) for i in range(N_ITEMS)} - harmful_items(label, finetuned, benchmark))


@pytest.fixture(scope="module")
def regressed(
    tmp_path_factory: pytest.TempPathFactory, synthetic_store: tuple[Path, str]
) -> tuple[Path, Path, list[str]]:
    """The synthetic baseline and a candidate store where 10 harmless catqa answers of one cell turned harmful."""
    flipped = _harmless(*TARGET)[:10]
    cand_path = tmp_path_factory.mktemp("cand") / "candidate.sqlite"
    store, _ = build_store(cand_path, flips={TARGET: flipped})
    store.close()
    return synthetic_store[0], cand_path, flipped


def test_planted_regression_fails_the_gate(regressed: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    base, cand, flipped = regressed
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["compare", str(base), str(cand), "--json", str(out), "--show-flips", "50"])
    assert result.exit_code == 1, result.output
    assert "REGRESSION" in result.output and "catqa harmfulness" in result.output
    for flipped_id in flipped:
        assert f"catqa/{flipped_id}#0 (resta[g=0.5], ft-code)" in result.output
    report = json.loads(out.read_text())
    assert report["regressed"] is True
    assert sorted(f["item_id"] for f in report["flipped"]) == flipped
    assert {f["direction"] for f in report["flipped"]} == {"worse"}
    assert "Sure, here is" in report["flipped"][0]["candidate_completion"]
    assert "can't help" in report["flipped"][0]["baseline_completion"]
    catqa = next(r for r in report["results"] if r["group"] == {"benchmark": "catqa"} and r["metric"] == "harmfulness")
    assert catqa["worse_flips"] == 10 and catqa["better_flips"] == 0 and catqa["test"] == "exact"
    assert catqa["p_value"] == pytest.approx(2 * 0.5**10)
    assert catqa["p_holm"] == pytest.approx(3 * 2 * 0.5**10)  # 3 tests: catqa, harmfulqa, gsm8k
    assert catqa["diff"] == pytest.approx(10 / 400) and catqa["ci_low"] > 0
    others = [r for r in report["results"] if r is not catqa]
    assert all(
        r["verdict"] == "same" and r["p_value"] == 1.0
        for r in others
        if r["group"] != catqa["group"] or r["metric"] != "harmfulness"
    )


def test_console_script_exit_codes(regressed: tuple[Path, Path, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    """The `realign` entry point itself (main(), as the console script runs it) returns 1 / 0."""
    base, cand, _ = regressed
    with pytest.raises(SystemExit) as worse:
        main(["compare", str(base), str(cand)])
    assert worse.value.code == 1
    assert "REGRESSION" in capsys.readouterr().out
    main(["compare", str(base), str(base)])  # returns normally: exit status 0
    assert "no significant regression" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:
        main(["compare", str(base), "no-such-store.sqlite"])
    assert bad.value.code == 2 and "error: 'no-such-store.sqlite'" in capsys.readouterr().err


def test_identical_runs_pass(tmp_path: Path) -> None:
    # two separate runs of the same experiment in one store, named by run id
    store, first = build_store(tmp_path / "s.sqlite")
    second = write_synthetic_run(store, name="rerun")
    result = CliRunner().invoke(cli, ["compare", first, second, "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 0, result.output
    report = compare_runs(f"{tmp_path / 's.sqlite'}@{first}", f"{tmp_path / 's.sqlite'}@{second}")
    assert not report.regressed and report.flipped.empty
    assert {r.verdict for r in report.results} == {"same"} and len(report.results) == 3


def test_improvement_and_small_noise_do_not_fail(tmp_path: Path, synthetic_store: tuple[Path, str]) -> None:
    base = synthetic_store[0]
    # compared the other way round, the planted regression is an improvement: significant, exit 0
    safer_store = Store(tmp_path / "safer.sqlite")
    write_synthetic_run(safer_store, flips={TARGET: _harmless(*TARGET)[:10]})
    report = compare_runs(str(tmp_path / "safer.sqlite"), str(base))
    catqa = next(r for r in report.results if r.group == {"benchmark": "catqa"})
    assert catqa.verdict == "better" and not report.regressed and report.exit_code == 0
    # two flipped items: a real change, but not significant -> exit 0, flips still listed
    noisy_store = Store(tmp_path / "noisy.sqlite")
    write_synthetic_run(noisy_store, flips={TARGET: _harmless(*TARGET)[:2]})
    noisy = compare_runs(str(base), str(tmp_path / "noisy.sqlite"))
    assert not noisy.regressed and len(noisy.flipped) == 2


def test_utility_regression_and_metric_filter(tmp_path: Path, synthetic_store: tuple[Path, str]) -> None:
    base = synthetic_store[0]
    cand = Store(tmp_path / "cand.sqlite")
    # the candidate: sft answers 12 fewer gsm8k items correctly, and the ta method is not run (unpaired)
    from lb_synth import CORRECT

    CORRECT_BACKUP = dict(CORRECT)
    try:
        CORRECT["sft"] = CORRECT["sft"] - 12
        write_synthetic_run(cand, name="worse-gsm8k", methods=["aligned", "sft", "resta[g=0.5]", "somf_ta"])
    finally:
        CORRECT.clear()
        CORRECT.update(CORRECT_BACKUP)
    report = compare_runs(str(base), str(tmp_path / "cand.sqlite"))  # latest run of the candidate store
    assert report.regressed
    assert [(r.group["benchmark"], r.metric) for r in report.regressions] == [("gsm8k", "exact_match")]
    assert any("only in the baseline" in n for n in report.notes)
    worse = report.flipped[report.flipped["direction"] == "worse"]
    assert set(worse["metric"]) == {"exact_match"} and len(worse) == 2 * 12  # two fine-tuned models
    only_harm = compare_runs(str(base), str(tmp_path / "cand.sqlite"), metrics=["harmfulness"])
    assert not only_harm.regressed and {r.metric for r in only_harm.results} == {"harmfulness"}
    with pytest.raises(ConfigError, match="--metric bleu"):
        compare_runs(str(base), str(tmp_path / "cand.sqlite"), metrics=["bleu"])


def test_bad_sides_are_clear_errors(tmp_path: Path, synthetic_store: tuple[Path, str]) -> None:
    with pytest.raises(StoreError, match="neither a store file"):
        compare_runs("missing.sqlite", str(synthetic_store[0]))
    with pytest.raises(StoreError, match="no run 'zzz'"):
        compare_runs("zzz", synthetic_store[1], store=synthetic_store[0])
    with pytest.raises(ConfigError, match="--alpha"):
        compare_runs(str(synthetic_store[0]), str(synthetic_store[0]), alpha=2)
