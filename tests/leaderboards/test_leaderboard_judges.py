"""Honest leaderboard: undeclared languages show "—", per-column judges, judge agreement, corrected rate."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.judges._cards import JudgeCard, cohen_kappa, rogan_gladen, save_card
from harness.core.hashing import hash_value
from harness.core.records import GenerationRecord, Verdict
from leaderboards import CellRecord, Store, build_leaderboard, collect_provenance
from leaderboards._render import agreement_view, render_markdown, summary_view

EN, BOTH = "en-judge@1", "both-judge@1"
N = 20
# Verdicts per benchmark: the English judge flags items < 12, the bilingual one items < 8 or == 19.
FLAGS = {EN: lambda i: i < 12, BOTH: lambda i: i < 8 or i == 19}


def _card(judge_id: str, languages: list[str], cards: Path, judge_hash: str = "h" * 16) -> None:
    from benchmarks.judges._cards import Validation, binary_metrics

    rows = [(1, 1)] * 40 + [(1, 0)] * 10 + [(0, 0)] * 45 + [(0, 1)] * 5  # sens 0.8, spec 0.9
    pairs = [(bool(t), bool(v)) for t, v in rows]
    val = Validation(
        name="hand",
        source="-",
        source_sha256="-",
        columns={},
        measured_at="-",
        metrics=binary_metrics(pairs),
        per_language={},
        rows=rows,
        row_languages=["en"] * len(rows),
    )
    save_card(
        JudgeCard(judge_id=judge_id, judge_hash=judge_hash, languages=languages, validations={"hand": val}), cards
    )


def _store(tmp_path: Path) -> tuple[Store, str]:
    store = Store(tmp_path / "results.sqlite")
    run_id = store.begin_run("judges", {"name": "judges"}, collect_provenance(seeds={"seed": 0}, device="cpu"))
    for bench, lang in (("adv-en", "en"), ("catqa-zh", "zh")):
        gens, verdicts = [], []
        for i in range(N):
            gens.append(
                GenerationRecord(
                    item_id=f"{bench}-{i}",
                    benchmark=bench,
                    prompt_text="p",
                    prompt_hash="p",
                    completion=f"answer {i}",
                    model_hash="m",
                    gen_config_hash="g",
                    backend="dummy",
                    language=lang,
                )
            )
            for jid, flag in FLAGS.items():
                verdicts.append(
                    Verdict(
                        item_id=f"{bench}-{i}",
                        judge_id=jid,
                        judge_hash="h" * 16,
                        label="harmful" if flag(i) else "harmless",
                    )
                )
        cell = CellRecord(
            cell_id=hash_value([bench], 32),
            method="sft",
            method_label="sft",
            params={},
            finetuned="ft",
            task="t",
            checkpoint_hash="c",
            benchmark=bench,
            benchmark_kind="safety",
            benchmark_options={},
            backend="dummy",
            gen_config_hash="g",
            judge_id=EN,
            judge_hash="h" * 16,
            chat_template_hash="t",
        )
        store.write_cell(run_id, cell, gens, verdicts, [])
    store.finish_run(run_id, "done", counts={})
    return store, run_id


@pytest.fixture()
def cards(tmp_path: Path) -> Path:
    out = tmp_path / "cards"
    _card(EN, ["en"], out)
    _card(BOTH, ["en", "zh"], out)
    return out


def test_undeclared_language_cell_is_a_dash_with_a_note(tmp_path: Path, cards: Path) -> None:
    store, run_id = _store(tmp_path)
    board = build_leaderboard(store, run_id, judge=EN, judges={"catqa-zh": EN}, cards=cards)
    view = summary_view(board)
    assert view[f"harm. % catqa-zh [95% CI] ({EN})"].tolist() == ["—"]
    assert view[f"harm. % adv-en [95% CI] ({EN})"].iloc[0].startswith("60.0")
    assert view["harm. mean %"].tolist() == ["60.0"]  # not (60 + 0) / 2 or (60 + 60) / 2: catqa-zh is left out
    assert any(EN in n and "does not declare zh" in n for n in board.notes)
    harm = board.harmfulness
    zh = harm[(harm["benchmark"] == "catqa-zh") & (harm["judge_id"] == EN)]
    assert zh["rate"].isna().all() and zh["undeclared"].all()
    assert "does not declare zh" in render_markdown(board)


def test_columns_name_their_judge_and_a_declaring_judge_takes_the_column(tmp_path: Path, cards: Path) -> None:
    store, run_id = _store(tmp_path)
    board = build_leaderboard(store, run_id, judge=EN, cards=cards)
    assert board.column_judges == {"adv-en": EN, "catqa-zh": BOTH}
    view = summary_view(board)
    assert view[f"harm. % catqa-zh [95% CI] ({BOTH})"].iloc[0].startswith("45.0")  # 9 / 20
    assert view["harm. mean %"].tolist() == ["52.5"]
    # Rogan–Gladen beside the raw rate, with the card's sens 0.8 / spec 0.9.
    corrected = board.summary["HC:adv-en"].iloc[0]
    assert corrected == pytest.approx(rogan_gladen(0.6, 0.8, 0.9))
    assert view["corrected % adv-en [95% CI]"].iloc[0].startswith(f"{100 * corrected:.1f} [")


def test_agreement_table_kappa_matches_hand_computation(tmp_path: Path, cards: Path) -> None:
    store, run_id = _store(tmp_path)
    board = build_leaderboard(store, run_id, judge=EN, cards=cards)
    table = board.agreement
    assert sorted(table["benchmark"]) == ["adv-en", "catqa-zh"]
    row = table[table["benchmark"] == "adv-en"].iloc[0]
    assert {row["judge_a"], row["judge_b"]} == {EN, BOTH}
    # EN flags 0..11, BOTH flags 0..7 and 19: they agree on 0..7 (8) and 12..18 (7) = 15 of 20.
    # p_EN = .6, p_BOTH = .45; expected .6*.45 + .4*.55 = .49; κ = (.75 - .49) / .51.
    assert row["agreement"] == pytest.approx(0.75)
    assert row["kappa"] == pytest.approx((0.75 - 0.49) / 0.51)
    a = [i < 12 for i in range(N)]
    b = [i < 8 or i == 19 for i in range(N)]
    assert row["kappa"] == pytest.approx(cohen_kappa(a, b))
    assert agreement_view(board)["Cohen's κ"].iloc[0] == f"{(0.75 - 0.49) / 0.51:.3f}"


def test_compare_shows_rogan_gladen_beside_the_raw_rate(
    tmp_path: Path, cards: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leaderboards import compare_runs

    monkeypatch.setenv("REALIGN_JUDGE_CARDS", str(cards))
    store, first = _store(tmp_path)
    store.close()
    (tmp_path / "b").mkdir()
    store, second = _store(tmp_path / "b")
    store.close()
    report = compare_runs(
        str(tmp_path / "results.sqlite") + f"@{first}",
        str(tmp_path / "b" / "results.sqlite") + f"@{second}",
        judge=EN,
        resamples=200,
    )
    result = next(r for r in report.results if r.group == {"benchmark": "adv-en"} and r.metric == "harmfulness")
    assert result.baseline_corrected is not None
    assert result.baseline_corrected[0] == pytest.approx(rogan_gladen(0.6, 0.8, 0.9))


def test_a_card_of_another_judge_hash_is_not_used(tmp_path: Path) -> None:
    """Cards are looked up by id + content hash: the same id measured with other options is not this judge."""
    cards = tmp_path / "cards"
    _card(EN, ["en"], cards, judge_hash="k" * 16)  # the only card of EN was measured with another hash
    store, run_id = _store(tmp_path)
    board = build_leaderboard(store, run_id, judge=EN, judges={"catqa-zh": EN}, cards=cards)
    assert any("no judge card for" in n and EN in n for n in board.notes)
    assert board.summary["HC:adv-en"].isna().all()  # no sens/spec, no corrected rate
    assert not board.harmfulness["undeclared"].any()  # languages unchecked, not masked
