"""Leaderboard aggregates checked against values computed by hand from the synthetic labels."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from lb_synth import (
    CATEGORIES,
    N_ITEMS,
    PASS_AT_1,
    REFERENCE_ROLES,
    build_store,
    category,
    harmful_count,
    harmful_items,
    item_id,
)

from harness.cli import cli
from harness.core.errors import ConfigError
from leaderboards import (
    Store,
    build_leaderboard,
    holm,
    mcnemar,
    paired_bootstrap_ci,
    render_leaderboard,
    wilson_interval,
)


def test_wilson_interval_matches_published_values() -> None:
    # reference values from the closed form (Wilson 1927), z = 1.96
    assert wilson_interval(4, 40) == pytest.approx((0.03958, 0.23052), abs=5e-5)
    assert wilson_interval(32, 40) == pytest.approx((0.65243, 0.89500), abs=5e-5)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=5e-5)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_mcnemar_holm_bootstrap() -> None:
    assert mcnemar(10, 0) == (pytest.approx(2 * 0.5**10), "exact")
    assert mcnemar(0, 0)[0] == 1.0
    p, used = mcnemar(30, 10)  # 40 discordant pairs -> chi2 with continuity correction
    assert used == "chi2" and p == pytest.approx(0.002663, abs=2e-5)  # (|30-10|-1)^2/40 = 9.025
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    base, cand = [0, 0, 1, 1] * 10, [1, 0, 1, 1] * 10
    assert paired_bootstrap_ci(base, cand, seed=3) == paired_bootstrap_ci(base, cand, seed=3)
    mean, low, high = paired_bootstrap_ci(base, cand, seed=3)
    assert mean == pytest.approx(0.25) and low < 0.25 < high


def test_summary_matches_hand_computed(synthetic_store: tuple[Path, str]) -> None:
    board = build_leaderboard(Store(synthetic_store[0], create=False))
    assert board.judge == "offline-minilm@1" and board.safety_benchmarks == ["catqa", "harmfulqa"]
    assert board.utility_benchmarks == {"gsm8k": "exact_match", "humaneval": "pass@1"}
    s = board.summary.set_index(["finetuned", "method_label"])
    for ft in ("ft-code", "ft-math"):
        h = {
            m: (harmful_count(m, ft, "catqa") + harmful_count(m, ft, "harmfulqa")) / (2 * N_ITEMS)
            for m in ("aligned", "sft", "resta[g=0.5]", "somf_ta", "ta[l=0.3]")
        }
        for method, value in h.items():
            row = s.loc[(ft, method)]
            assert row["harmfulness_mean"] == pytest.approx(value)
            assert row["safety_recovered"] == pytest.approx((h["sft"] - value) / (h["sft"] - h["aligned"]))
            k = harmful_count(method, ft, "catqa")
            assert (row["H:catqa"], row["H:catqa:low"], row["H:catqa:high"]) == pytest.approx(
                (k / N_ITEMS, *wilson_interval(k, N_ITEMS))
            )
    # ft-code, resta: gsm8k 25/40 vs sft 28/40; humaneval 0.36 vs 0.40. Utility retained is on the
    # fine-tune's own task only: humaneval (code) for ft-code, gsm8k (math) for ft-math.
    row = s.loc[("ft-code", "resta[g=0.5]")]
    assert row["U:gsm8k"] == pytest.approx(25 / 40)
    assert row["utility_retained"] == pytest.approx(PASS_AT_1["resta[g=0.5]"] / PASS_AT_1["sft"])
    assert s.loc[("ft-math", "resta[g=0.5]"), "utility_retained"] == pytest.approx(27 / 30)
    assert s.loc[("ft-code", "sft"), "safety_recovered"] == 0 and s.loc[("ft-math", "aligned"), "safety_recovered"] == 1
    # rows in a stable order: per fine-tuned model, reference rows first
    assert list(board.summary["method_label"][:3]) == ["aligned", "sft", "resta[g=0.5]"]


def test_language_and_category_breakdowns(synthetic_store: tuple[Path, str]) -> None:
    board = build_leaderboard(Store(synthetic_store[0], create=False))
    harm = board.harmfulness
    zh = harm[(harm["method_label"] == "sft") & (harm["finetuned"] == "ft-code") & (harm["language"] == "zh")]
    expected_zh = sum(
        1 for i in range(1, N_ITEMS, 2) if item_id("catqa", i) in harmful_items("sft", "ft-code", "catqa")
    )
    assert (
        list(zh["benchmark"]) == ["catqa"] and int(zh["harmful"].iloc[0]) == expected_zh and int(zh["n"].iloc[0]) == 20
    )
    assert "zh" not in set(harm[harm["benchmark"] == "harmfulqa"]["language"])  # single-language benchmark: "all" only
    cats = board.categories
    assert set(cats["category"]) == set(CATEGORIES)
    for cat_index, cat in enumerate(CATEGORIES):
        ids = {item_id("harmfulqa", i) for i in range(N_ITEMS) if category(i) == cat}
        expected = len(ids & harmful_items("ta[l=0.3]", "ft-math", "harmfulqa"))
        got = cats[
            (cats["method_label"] == "ta[l=0.3]")
            & (cats["finetuned"] == "ft-math")
            & (cats["benchmark"] == "harmfulqa")
            & (cats["category"] == cat)
        ]
        assert int(got["harmful"].iloc[0]) == expected and int(got["n"].iloc[0]) == 10, cat_index


def test_pairwise_reported_apart_from_absolute(synthetic_store: tuple[Path, str]) -> None:
    board = build_leaderboard(Store(synthetic_store[0], create=False))
    pairs = board.pairwise
    assert set(pairs["method_label"]) == {"somf_ta"} and set(pairs["judge_id"]) == {"pairwise-offline@1"}
    row = pairs.iloc[0]
    assert row["wins"] + row["losses"] + row["draws"] == N_ITEMS
    assert row["score"] == pytest.approx((row["wins"] - row["losses"]) / N_ITEMS * 100)
    assert not any("pairwise" in c for c in board.summary.columns)  # never mixed into the summary
    assert set(board.harmfulness["judge_id"]) == {"offline-minilm@1"}


def test_undefined_summary_columns_are_dashes(tmp_path: Path) -> None:
    store, _ = build_store(tmp_path / "s.sqlite", methods=["sft", "resta[g=0.5]"])  # no aligned reference
    board = build_leaderboard(store)
    assert board.summary["safety_recovered"].isna().all()
    assert board.summary["utility_retained"].notna().all()
    assert any("aligned" in n for n in board.notes)
    files = render_leaderboard(board, tmp_path / "out", ["md"])
    text = files[0].read_text()
    summary_lines = [line for line in text.splitlines() if line.startswith("| ft-code | resta")]
    assert summary_lines and "| — |" in summary_lines[0]
    with pytest.raises(ConfigError, match="--judge 'nope'"):
        build_leaderboard(store, judge="nope")


def test_render_is_byte_identical(tmp_path: Path, synthetic_store: tuple[Path, str]) -> None:
    outputs = []
    for attempt in ("a", "b"):
        store = Store(synthetic_store[0], create=False)  # a fresh open each time
        files = render_leaderboard(build_leaderboard(store), tmp_path / attempt)
        outputs.append({p.name: p.read_bytes() for p in files})
        store.close()
    assert outputs[0] == outputs[1]
    assert {
        "index.html",
        "scatter.svg",
        "heatmap.svg",
        "leaderboard.md",
        "leaderboard.json",
        "summary.csv",
        "harmfulness.csv",
        "categories.csv",
        "utility.csv",
        "pairwise.csv",
    } <= set(outputs[0])
    assert b"http" not in outputs[0]["index.html"]  # offline: no CDN, no remote asset
    svg = outputs[0]["scatter.svg"].decode()
    assert "<dc:date>" not in svg and 'id="pareto-front-0"' in svg and 'id="pareto-front-1"' in svg


def test_leaderboard_cli(tmp_path: Path, synthetic_store: tuple[Path, str]) -> None:
    path, run_id = synthetic_store
    result = CliRunner().invoke(
        cli,
        [
            "leaderboard",
            "--store",
            str(path),
            "--out",
            str(tmp_path / "site"),
            "--run",
            run_id[:15],
            "--format",
            "md,json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["leaderboard.json", "leaderboard.md"]
    import json

    data = json.loads((tmp_path / "site" / "leaderboard.json").read_text())
    assert data["run"]["run_id"] == run_id and len(data["tables"]["summary"]) == 10
    bad = CliRunner().invoke(
        cli, ["leaderboard", "--store", str(path), "--out", str(tmp_path / "x"), "--format", "pdf"]
    )
    assert isinstance(bad.exception, ConfigError) and "pdf" in str(bad.exception)
    unknown_run = CliRunner().invoke(
        cli, ["leaderboard", "--store", str(path), "--out", str(tmp_path / "x"), "--run", "zzz"]
    )
    assert "no run 'zzz'" in str(unknown_run.exception)


def _small_cell(
    store: Store, run_id: str, cell_id: str, verdicts: list[tuple[str, str, int]], judge_id: str | None = None
) -> None:
    """One catqa cell of the `original` model with verdicts given as (judge, label, count)."""
    from harness.core.records import GenerationRecord, Verdict
    from leaderboards import CellRecord

    total = sum(c for _, _, c in verdicts)
    gens = [
        GenerationRecord(
            item_id=f"i{i}",
            benchmark="catqa",
            prompt_text="p",
            prompt_hash="h",
            completion="c",
            model_hash="m",
            gen_config_hash="g",
            backend="dummy",
        )
        for i in range(total)
    ]
    rows, index = [], {}
    for judge, label, count in verdicts:
        for _ in range(count):
            k = index[judge] = index.get(judge, -1) + 1
            rows.append(Verdict(item_id=f"i{k}", judge_id=judge, judge_hash="x", label=label))  # type: ignore[arg-type]
    store.write_cell(
        run_id,
        CellRecord(
            cell_id=cell_id,
            method="original",
            reference_role=REFERENCE_ROLES["original"],
            finetuned="-",
            benchmark="catqa",
            benchmark_kind="safety",
            judge_id=judge_id,
        ),
        gens,
        rows,
        [],
    )


def test_primary_judge_choice_and_refusal_table(fresh_store: Store, tmp_path: Path) -> None:
    run_id = fresh_store.begin_run("judges", {}, {})
    _small_cell(
        fresh_store,
        run_id,
        "c1",
        [
            ("a@1", "harmful", 2),
            ("a@1", "harmless", 4),
            ("b@1", "harmful", 4),
            ("refusal@1", "refusal", 3),
            ("refusal@1", "compliance", 3),
        ],
    )
    board = build_leaderboard(fresh_store)
    assert board.judge == "a@1" and any("also in the store: b@1" in n for n in board.notes)
    assert board.summary["harmfulness_mean"].iloc[0] == pytest.approx(2 / 6)
    assert set(board.harmfulness["judge_id"]) == {"a@1", "b@1"}
    assert board.refusal["rate"].iloc[0] == pytest.approx(0.5)
    assert build_leaderboard(fresh_store, judge="b@1").summary["harmfulness_mean"].iloc[0] == 1.0
    # a judge declared on the cells by the runner wins over the verdict count
    declared_run = fresh_store.begin_run("declared", {}, {})
    _small_cell(
        fresh_store,
        declared_run,
        "c2",
        [("a@1", "harmful", 2), ("a@1", "harmless", 4), ("b@1", "harmful", 4)],
        judge_id="b@1",
    )
    declared = build_leaderboard(fresh_store, declared_run)
    assert declared.judge == "b@1" and any("declared by the runner" in n for n in declared.notes)
    text = render_leaderboard(board, tmp_path / "out", ["md"])[0].read_text()
    assert "## Refusal rate" in text and "## Pairwise" not in text


def test_empty_run_renders(fresh_store: Store, tmp_path: Path) -> None:
    fresh_store.begin_run("nothing yet", {}, {})
    files = render_leaderboard(build_leaderboard(fresh_store), tmp_path / "out")
    names = {p.name for p in files}
    assert "index.html" in names and "scatter.svg" not in names and "heatmap.svg" not in names
    assert "nothing yet" in (tmp_path / "out" / "index.html").read_text()


def test_schema_compiles_for_postgres() -> None:
    """The DDL and the upsert are valid for the Postgres dialect (no server needed to check that)."""
    from sqlalchemy.dialects import postgresql
    from sqlalchemy.dialects.postgresql import insert
    from sqlalchemy.schema import CreateTable

    from leaderboards import _schema

    for table in _schema.metadata.sorted_tables:
        ddl = str(CreateTable(table).compile(dialect=postgresql.dialect()))
        assert "PRIMARY KEY" in ddl
    stmt = insert(_schema.verdicts).on_conflict_do_update(
        index_elements=["cell_id", "item_id", "sample_index", "judge_id"], set_={"label": "harmful"}
    )
    assert "ON CONFLICT (cell_id, item_id, sample_index, judge_id) DO UPDATE" in str(
        stmt.compile(dialect=postgresql.dialect())
    )


def _nll_run(path: Path, nll: dict[tuple[str, str, str], float], tasks: dict[str, str | None]) -> Store:
    """Cells of task_nll per (method, fine-tune, category) with a given NLL (lower is better)."""
    from harness.core.hashing import hash_value
    from harness.core.records import Score
    from leaderboards import CellRecord, collect_provenance

    store = Store(path)
    run_id = store.begin_run("nll", {}, collect_provenance(device="cpu (synthetic)"))
    for (method, ft, cat), value in nll.items():
        store.write_cell(
            run_id,
            CellRecord(
                cell_id=hash_value([method, ft, cat], 32),
                method=method,
                reference_role=REFERENCE_ROLES.get(method),
                finetuned=ft,
                task=tasks[ft],
                benchmark="task_nll",
                benchmark_label=f"nll-{cat}",
                benchmark_kind="utility",
                benchmark_options={"name": "task_nll", "categories": [cat], "task": None},
            ),
            scores=[Score(benchmark="task_nll", metric="nll", value=value, n=10, higher_is_better=False)],
        )
    store.finish_run(run_id, "done")
    return store


def test_utility_retained_is_the_fine_tunes_own_task_and_the_share_of_its_gain(tmp_path: Path) -> None:
    """The math fine-tune's utility is its math NLL only: the aligned model keeps 0% of the gain (not
    the 86% a mean of NLL ratios over every task gave), a method halfway back keeps 50%."""
    from leaderboards import utility_retained

    nll = {
        ("aligned", "math", "math"): 2.0,
        ("sft", "math", "math"): 1.0,
        ("resta", "math", "math"): 1.5,
        ("aligned", "math", "code"): 1.0,
        ("sft", "math", "code"): 1.2,
        ("resta", "math", "code"): 1.1,
        ("aligned", "plain", "math"): 2.0,
        ("sft", "plain", "math"): 1.0,
        ("resta", "plain", "math"): 1.5,
        ("aligned", "plain", "code"): 1.0,
        ("sft", "plain", "code"): 1.2,
        ("resta", "plain", "code"): 1.1,
        ("aligned", "chat", "math"): 2.0,
        ("sft", "chat", "math"): 1.0,
    }
    board = build_leaderboard(_nll_run(tmp_path / "s.sqlite", nll, {"math": "math", "plain": None, "chat": "chinese"}))
    s = board.summary.set_index(["finetuned", "method"])["utility_retained"]
    assert s[("math", "aligned")] == pytest.approx(0.0)
    assert s[("math", "sft")] == pytest.approx(1.0)
    assert s[("math", "resta")] == pytest.approx(0.5)  # (2.0 − 1.5) / (2.0 − 1.0)
    # no task: every utility benchmark, with a note; code NLL got worse in fine-tuning (no gain): undefined
    assert math.isnan(s[("plain", "resta")])
    assert any("plain: no `task:`" in n for n in board.notes)
    # a task no benchmark measures: no number, and the note says how to declare one
    assert math.isnan(s[("chat", "sft")])
    assert any("chat: no utility benchmark measures its task 'chinese' (set `task: chinese`" in n for n in board.notes)
    assert utility_retained(0.6, 0.8, 0.3) == pytest.approx(0.75)  # accuracy: the ratio U_method / U_ft
    assert utility_retained(1.5, 1.0, 2.0, higher_is_better=False) == pytest.approx(0.5)
    assert math.isnan(utility_retained(1.5, 1.0, math.nan, higher_is_better=False))


def test_cost_columns_in_the_summary_and_the_cost_table(synthetic_store: tuple[Path, str], tmp_path: Path) -> None:
    from lb_synth import METHODS, cost

    board = build_leaderboard(Store(synthetic_store[0], create=False))
    s = board.summary.set_index(["finetuned", "method_label"])
    benchmarks = ("catqa", "harmfulqa", "gsm8k", "humaneval")
    for label in METHODS:
        row = s.loc[("ft-math", label)]
        cells = [cost(label, b) for b in benchmarks]
        assert row["cost:merge_seconds"] == cells[0]["merge_seconds"]  # once per checkpoint, not per benchmark
        assert row["cost:train_seconds"] == cells[0]["train_seconds"]
        for column in ("generate_seconds", "judge_seconds", "score_seconds", "tokens_generated"):
            assert row[f"cost:{column}"] == pytest.approx(sum(c[column] for c in cells)), (label, column)
        assert row["cost:total_seconds"] == pytest.approx(
            cells[0]["merge_seconds"]
            + cells[0]["train_seconds"]
            + sum(c["generate_seconds"] + c["judge_seconds"] + c["score_seconds"] for c in cells)
        )
    assert s.loc[("ft-code", "somf_ta"), "cost:train_seconds"] == 100.0
    assert len(board.cost) == len(METHODS) * 2 * len(benchmarks)
    files = {p.name: p for p in render_leaderboard(board, tmp_path / "site", ["md", "csv", "html"])}
    md = files["leaderboard.md"].read_text()
    # no method here calibrates: the summary has no calibration columns
    assert "| cost s | merge s | mask train s | gen s | judge s | tokens |" in md.replace(" | Pareto |", " |")
    somf_line = next(line for line in md.splitlines() if line.startswith("| ft-code | somf_ta |"))
    # total 132 = merge 13 (rank 3) + mask training 100 + generation 3 × 5 + judging 2 + scoring 4 × 0.5
    assert "| 132.0 | 13.0 | 100.0 | 15.0 | 2.0 | 480 |" in somf_line
    board.summary.loc[
        board.summary["method_label"] == "somf_ta", ["cost:calibration_seconds", "cost:calibration_examples"]
    ] = [7.0, 16]
    calibrated = render_leaderboard(board, tmp_path / "site2", ["md"])[0].read_text()
    assert "| cost s | merge s | mask train s | calib s | calib n | gen s | judge s | tokens |" in calibrated.replace(
        " | Pareto |", " |"
    )
    assert "| 100.0 | 7.0 | 16 | 15.0 |" in next(
        line for line in calibrated.splitlines() if line.startswith("| ft-code | somf_ta |")
    )
    assert "## Cost per cell" in md and "cost.csv" in files
    assert "mask train s" in files["index.html"].read_text()


def test_a_version_1_store_is_migrated_and_shows_no_cost(tmp_path: Path) -> None:
    """A store written before cost columns existed opens (migrated in place), its cells' costs NULL."""
    import sqlite3

    from leaderboards import SCHEMA_VERSION

    path = tmp_path / "old.sqlite"
    store, _ = build_store(path, methods=["aligned", "sft"])
    store.close()
    with sqlite3.connect(path) as conn:  # make it the version-1 layout
        for column in (
            "merge_seconds",
            "train_seconds",
            "generate_seconds",
            "judge_seconds",
            "score_seconds",
            "tokens_generated",
            "calibration_seconds",
            "calibration_examples",
            "reference_role",
        ):
            conn.execute(f"ALTER TABLE cells DROP COLUMN {column}")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    migrated = Store(path, create=False)
    assert migrated.schema_version == SCHEMA_VERSION == 4
    assert migrated.cells()["merge_seconds"].isna().all()
    # the reference rows' roles are filled in from the names the baselines had before roles were recorded
    roles = migrated.cells().drop_duplicates("method").set_index("method")["reference_role"].to_dict()
    assert roles == {"aligned": "aligned", "sft": "finetuned"}
    board = build_leaderboard(migrated)
    assert board.summary["cost:total_seconds"].isna().all()
    md = render_leaderboard(board, tmp_path / "site", ["md"])[0].read_text()
    assert "merge s" not in md and "Cost per cell" not in md  # nothing recorded: no columns of dashes
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("4",)


def test_reference_rows_are_found_by_the_stored_role_not_the_method_name(tmp_path: Path) -> None:
    """A version-3 store gets its roles from the old baseline names; after that only the role counts: a
    realignment method named like a baseline is an ordinary row, and safety recovered follows the roles."""
    import sqlite3

    path = tmp_path / "v3.sqlite"
    store, _ = build_store(path, methods=["aligned", "sft", "resta[g=0.5]"])
    store.close()
    with sqlite3.connect(path) as conn:  # the version-3 layout: no reference_role
        conn.execute("ALTER TABLE cells DROP COLUMN reference_role")
        conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    migrated = Store(path, create=False)
    board = build_leaderboard(migrated)
    assert board.reference_roles == {"aligned": "aligned", "sft": "finetuned"}
    recovered = board.summary.set_index(["finetuned", "method"])["safety_recovered"]
    assert recovered.notna().any()
    migrated.close()
    with sqlite3.connect(path) as conn:  # the same rows, but nothing marked as the fine-tune's reference
        conn.execute("UPDATE cells SET reference_role = NULL WHERE method = 'sft'")
    board = build_leaderboard(Store(path, create=False))
    assert board.reference_roles == {"aligned": "aligned"} and not board.is_reference("sft")
    assert board.summary["safety_recovered"].isna().all()
    assert any("fine-tune unchanged" in note for note in board.notes)


def test_wilson_interval_is_undefined_without_trials() -> None:
    """No trials, no rate: the interval is NaN like the rate, not a made-up [0, 1]."""
    low, high = wilson_interval(0, 0)
    assert math.isnan(low) and math.isnan(high)
    assert wilson_interval(0, 1)[0] == 0.0
