"""The matrix runner end to end on tiny real checkpoints: plan, run, cache, resume, bad config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.core.errors import ConfigError
from harness.experiment import load_experiment, run_experiment
from harness.testing import make_finetune


@pytest.fixture(scope="module")
def zoo(tiny_llama_factory, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exp_zoo")
    base = tiny_llama_factory("exp-base")
    return {
        "aligned": base,
        "unaligned": make_finetune(base, root / "unaligned", seed=11),
        "math": make_finetune(base, root / "math", seed=12),
        "code": make_finetune(base, root / "code", seed=13),
    }


def write_experiment(tmp_path: Path, zoo: dict[str, Path], **overrides) -> Path:
    config = {
        "name": "tiny",
        "output_dir": str(tmp_path / "out"),
        "models": overrides.pop("models", None)
        or {
            "aligned": {"path": str(zoo["aligned"])},
            "unaligned": {"path": str(zoo["unaligned"])},
            "finetuned": [
                {"name": "math", "path": str(zoo["math"]), "task": "math"},
                {"name": "code", "path": str(zoo["code"]), "task": "code"},
            ],
        },
        "methods": [
            {"name": "sft"},
            {"name": "aligned"},
            {"name": "resta", "grid": {"gamma": [0.5, 1.0]}},
            {"name": "task_arithmetic", "params": {"lam": 0.3}},
        ],
        "benchmarks": [{"name": "catqa", "languages": ["en"], "sample": 5, "seed": 1}],
        "judges": ["refusal"],
        "generation": {"backend": "dummy", "max_new_tokens": 8},
    }
    config.update(overrides)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_run_stores_every_cell_and_rerun_is_a_cache_hit(tmp_path, zoo, data_dir):
    from leaderboards import Store, build_leaderboard

    path = write_experiment(tmp_path, zoo)
    first = run_experiment(path, progress=False)
    counts = first.stats.counts
    # 2 fine-tunes × (sft, aligned, resta×2, task_arithmetic); aligned is shared by both fine-tunes.
    assert counts["merge_done"] == 6
    assert counts["cell_stored"] == 10
    assert counts["generate_done"] == 9  # the aligned checkpoint is generated once for both rows

    store = Store(first.store_location)
    assert len(store.complete_cells()) == 10
    items = store.items_frame(first.run_id)
    assert len(items) == 10 * 5
    assert not items.duplicated(["cell_id", "item_id"]).any()
    board = build_leaderboard(store, first.run_id)
    assert board is not None

    second = run_experiment(path, progress=False)
    c2 = second.stats.counts
    assert c2["merge_done"] == 0 and c2["generate_done"] == 0 and c2["judge_done"] == 0
    assert c2["cell_cached"] == 10
    assert "merges: 0 done" in second.log_path.read_text()


def test_adding_a_method_runs_only_its_cells(tmp_path, zoo, data_dir):
    path = write_experiment(tmp_path, zoo)
    run_experiment(path, progress=False)
    exp = yaml.safe_load(path.read_text())
    exp["methods"].append({"name": "resta_dare", "params": {"p": 0.3}})
    path.write_text(yaml.safe_dump(exp))
    dry = run_experiment(path, dry_run=True, progress=False)
    assert sum(r["stored"] == "no" for r in dry.plan_rows) == 2
    result = run_experiment(path, progress=False)
    assert result.stats.counts["merge_done"] == 2
    assert result.stats.counts["cell_cached"] == 10


def test_only_selects_cells(tmp_path, zoo, data_dir):
    result = run_experiment(write_experiment(tmp_path, zoo), only={"method": "sft"}, progress=False)
    assert result.stats.counts["cell_stored"] == 2
    assert result.stats.counts["merge_done"] == 0


ALL_KILL_POINTS = [
    "merge:1",
    "merge:4",
    "generate:1",
    "generate:5",
    "judge:1",
    "judge:3",
    "judge:7",
    "store:1",
    "store:4",
    "store:9",
]


@pytest.mark.parametrize(
    "kill_points",
    [
        pytest.param(["merge:2", "judge:2", "store:3"], id="3-points"),
        pytest.param(ALL_KILL_POINTS, id="10-points", marks=pytest.mark.slow),
    ],
)
def test_killed_run_resumes_to_the_same_scores(tmp_path, zoo, data_dir, kill_points):
    """SIGKILL at crash points across merge, generate, judge and store writes, then resume."""
    from leaderboards import Store

    reference = run_experiment(write_experiment(tmp_path / "ref", zoo), progress=False)
    ref_scores = Store(reference.store_location).scores_frame()

    path = write_experiment(tmp_path / "killed", zoo)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    codes = []
    for point in kill_points:
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "run", str(path), "--no-progress"],
            env={**env, "REALIGN_KILL_AT": point},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode in (-9, 0), proc.stderr[-2000:]
        codes.append(proc.returncode)
    assert codes.count(-9) == len(kill_points), f"not every crash point was reached: {codes}"
    final = run_experiment(path, progress=False)
    store = Store(final.store_location)
    items = store.items_frame(final.run_id)
    assert len(items) == 50 and not items.duplicated(["cell_id", "item_id"]).any()
    cols = ["benchmark", "metric", "value", "n"]
    got = store.scores_frame().sort_values(cols)[cols].reset_index(drop=True)
    want = ref_scores.sort_values(cols)[cols].reset_index(drop=True)
    assert got.equals(want)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"methdos": []}, "methdos: unknown key"),
        ({"seed": "abc"}, "seed"),
        ({"methods": [{"name": "resta", "params": {"gamma": -5}}]}, "gamma"),
        ({"methods": [{"name": "dare", "params": {"p": 1.0}}]}, "'p'"),
        ({"methods": [{"name": "resta"}, {"name": "resta"}]}, "same output name"),
        ({"methods": [{"name": "rseta"}]}, "did you mean"),
        ({"benchmarks": [{"name": "catqa", "languages": ["xx"]}]}, "xx"),
        ({"judges": ["nonesuch"]}, "nonesuch"),
    ],
)
def test_bad_config_is_refused_before_any_work(tmp_path, zoo, data_dir, override, message):
    path = write_experiment(tmp_path, zoo, **override)
    with pytest.raises(ConfigError, match=message):
        run_experiment(path, progress=False)
    assert not (tmp_path / "out" / "results.sqlite").exists() or not list((tmp_path / "out" / "checkpoints").iterdir())


def test_a_parameter_needing_a_missing_input_is_refused_before_any_work(tmp_path, zoo, data_dir):
    """Antidote's default prune='update' needs θ_A: an experiment without `aligned` is refused at plan time."""
    models = {"unaligned": {"path": str(zoo["unaligned"])}, "finetuned": [{"name": "math", "path": str(zoo["math"])}]}
    path = write_experiment(tmp_path, zoo, models=models, methods=[{"name": "antidote"}])
    with pytest.raises(ConfigError, match=r"antidote.*prune='update'.*needs input aligned.*add them under `models:`"):
        run_experiment(path, progress=False)
    assert not (tmp_path / "out" / "checkpoints").exists()
    weights = write_experiment(
        tmp_path / "w", zoo, models=models, methods=[{"name": "antidote", "params": {"prune": "weights"}}]
    )
    assert run_experiment(weights, progress=False, dry_run=True) is not None


def test_missing_model_path_is_named(tmp_path, zoo, data_dir):
    path = write_experiment(tmp_path, zoo)
    exp = yaml.safe_load(path.read_text())
    exp["models"]["unaligned"]["path"] = str(tmp_path / "nowhere")
    path.write_text(yaml.safe_dump(exp))
    with pytest.raises(ConfigError, match=r"models.unaligned.path: .*nowhere does not exist"):
        run_experiment(path, progress=False)


def test_example_config_parses():
    exp = load_experiment(Path(__file__).resolve().parents[2] / "configs" / "example.yaml")
    assert exp.methods and exp.benchmarks


def test_ray_executor_runs_cells_as_ray_tasks(tmp_path, zoo, data_dir):
    """A real local Ray instance on CPU: one task per checkpoint group, same results as local."""
    pytest.importorskip("ray")
    from leaderboards import Store

    path = write_experiment(
        tmp_path,
        zoo,
        methods=[{"name": "sft"}, {"name": "resta", "params": {"gamma": 0.5}}],
        pairwise={"reference": "sft", "benchmarks": ["catqa"]},
    )
    result = run_experiment(path, executor="ray", progress=False)
    assert result.stats.counts["merge_done"] == 2  # counted inside the Ray workers and sent back
    # the sft groups ran as a first wave: the resta workers found their answers on disk
    assert result.stats.counts["pairwise_done"] == 2 and result.stats.counts["generate_done"] == 4
    store = Store(result.store_location)
    assert len(store.complete_cells()) == 4
    pairs = store.verdicts_frame(result.run_id)
    assert (pairs["judge_id"] == "pairwise:sft/refusal/gcg@2").sum() == 2 * 5
    again = run_experiment(path, progress=False)  # the local executor sees the Ray run's cache
    assert again.stats.counts["cell_cached"] == 4 and again.stats.counts["merge_done"] == 0


@pytest.fixture(scope="module")
def lora_zoo(tiny_llama_factory, tmp_path_factory) -> dict[str, Path]:
    """The organism's shape on a tiny Llama: θ_A, θ_U and θ_F are LoRA adapters on one base, and θ_F
    continues θ_A's adapter."""
    from harness.testing import continue_adapter, make_lora_adapter

    root = tmp_path_factory.mktemp("lora_zoo")
    base = tiny_llama_factory("lora-base")
    modules = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    aligned = make_lora_adapter(base, root / "aligned", seed=1, **modules)
    return {
        "base": base,
        "aligned": aligned,
        "unaligned": continue_adapter(base, aligned, root / "unaligned", seed=2),
        "math": continue_adapter(base, aligned, root / "math", seed=3),
    }


def test_adapter_organism_runs_safe_lora_on_the_difference_and_scores_task_nll(tmp_path, lora_zoo, data_dir):
    """Adapters continuing θ_A's: Safe LoRA gets the aligned adapter filled in and only the adapter
    input (no dense fine-tune), and the model-scored task_nll cells land in the store."""
    import json
    import math

    from leaderboards import Store, build_leaderboard

    base = str(lora_zoo["base"])
    path = write_experiment(
        tmp_path,
        lora_zoo,
        models={
            "original": {"path": base},
            "base": {"path": base},
            "aligned": {"path": base, "adapter": str(lora_zoo["aligned"])},
            "unaligned": {"path": base, "adapter": str(lora_zoo["unaligned"])},
            "finetuned": [{"name": "math", "path": base, "adapter": str(lora_zoo["math"]), "task": "math"}],
        },
        methods=[
            {"name": "sft"},
            {"name": "aligned"},
            {"name": "safe_lora", "params": {"threshold": 0.95}},
            {"name": "resta"},
        ],
        benchmarks=[
            {"name": "catqa", "languages": ["en"], "sample": 3, "seed": 1},
            {"name": "task_nll", "label": "nll", "categories": ["code"], "limit": 2, "task": "math"},
        ],
    )
    result = run_experiment(path, progress=False)
    store = Store(result.store_location)
    assert len(store.complete_cells()) == 5 * 2  # original, sft, aligned, safe_lora, resta
    summary = build_leaderboard(store, result.run_id).summary.set_index("method")
    # the pre-alignment baseline belongs to no fine-tune: recovered/retained are undefined, not 0 or 100
    assert math.isnan(summary.loc["original", "safety_recovered"])
    assert math.isnan(summary.loc["original", "utility_retained"])
    # NLL is lower-is-better: retained = (U_aligned − U_method) / (U_aligned − U_ft), on the benchmark
    # whose `task:` is the fine-tune's (math); undefined when fine-tuning did not lower the NLL
    u_al, u_ft = summary.loc["aligned", "U:nll"], summary.loc["sft", "U:nll"]
    for method in ("sft", "aligned", "resta"):
        expected = (u_al - summary.loc[method, "U:nll"]) / (u_al - u_ft) if u_al > u_ft else math.nan
        assert summary.loc[method, "utility_retained"] == pytest.approx(expected, nan_ok=True)
    scores = store.scores_frame(result.run_id)
    nll = scores[scores["metric"] == "nll"]
    assert len(nll) == 5 and (nll["value"] > 0).all() and not nll["higher_is_better"].any()
    assert nll["value"].nunique() == 5  # five different models
    # per-item NLL is stored for compare, and each cell's costs
    per_item = store.item_scores_frame(result.run_id)
    assert len(per_item[per_item["metric"] == "nll"]) == 5 * 2 and (per_item["value"] > 0).all()
    cells = store.cells(result.run_id).set_index(["method", "benchmark"])
    assert (cells.loc[[("safe_lora", "catqa"), ("resta", "catqa")], "merge_seconds"] > 0).all()
    assert cells.loc[("sft", "catqa"), "merge_seconds"] == 0.0
    assert (cells.xs("catqa", level="benchmark")[["generate_seconds", "judge_seconds"]] > 0).all().all()
    assert (cells.xs("catqa", level="benchmark")["tokens_generated"] > 0).all()
    assert (cells.xs("task_nll", level="benchmark")["score_seconds"] > 0).all()
    nll_cells = cells.xs("task_nll", level="benchmark")
    assert (nll_cells[["generate_seconds", "judge_seconds", "tokens_generated"]] == 0).all().all()  # none of that
    board = build_leaderboard(store, result.run_id)
    row = board.summary.set_index("method").loc["resta"]
    resta = cells.xs("resta", level="method")
    assert row["cost:merge_seconds"] == pytest.approx(
        resta["merge_seconds"].iloc[0]
    )  # one merge, not one per benchmark
    assert row["cost:generate_seconds"] == pytest.approx(resta["generate_seconds"].sum())
    assert row["cost:tokens_generated"] == resta["tokens_generated"].sum() > 0
    assert row["cost:total_seconds"] == pytest.approx(
        resta["merge_seconds"].iloc[0]
        + resta["train_seconds"].iloc[0]
        + resta[["generate_seconds", "judge_seconds", "score_seconds"]].to_numpy().sum()
    )
    provenance = [json.loads(p.read_text()) for p in (tmp_path / "out" / "checkpoints").glob("*/realign_merge.json")]
    safe_lora = [p for p in provenance if p["method"] == "safe_lora"]
    assert len(safe_lora) == 1 and safe_lora[0]["params"]["aligned_adapter"] == str(lora_zoo["aligned"])


def test_a_changed_judge_rejudges_but_does_not_regenerate(tmp_path, zoo, data_dir, monkeypatch):
    """Cells are named by their judges' content hashes, not their names: a new keyword list (same
    judge name and options) makes new cells and verdicts while generations and model scores stay cached."""
    import dataclasses

    from benchmarks.judges import _refusal_lists

    path = write_experiment(
        tmp_path,
        zoo,
        methods=[{"name": "sft"}],
        benchmarks=[
            {"name": "catqa", "languages": ["en"], "sample": 3},
            {"name": "task_nll", "categories": ["code"], "limit": 2},
        ],
    )
    first = run_experiment(path, progress=False)
    assert first.stats.counts["cell_stored"] == 4 and first.stats.counts["model_score_done"] == 2
    gcg = _refusal_lists.REFUSAL_LISTS["gcg"]
    monkeypatch.setitem(
        _refusal_lists.REFUSAL_LISTS,
        "gcg",
        dataclasses.replace(gcg, keywords=(*gcg.keywords, "a keyword from a newer release")),
    )
    second = run_experiment(path, progress=False)
    assert second.stats.counts["cell_stored"] == 4 and second.stats.counts["cell_cached"] == 0
    assert second.stats.counts["judge_done"] == 2 and second.stats.counts["generate_cached"] == 2
    assert second.stats.counts["model_score_cached"] == 2 and second.stats.counts["model_score_done"] == 0


def test_pairwise_reference_judges_somf_eval_against_the_reference_answers(tmp_path, lora_zoo, data_dir):
    """`pairwise: {reference: original}` judges each cell's somf_eval answers against the original
    model's answers to the same items: win/loss/draw in the store and pairwise.csv, next to (never
    instead of) absolute harmfulness; the reference is not judged against itself."""
    from leaderboards import Store, build_leaderboard, render_leaderboard

    base = str(lora_zoo["base"])
    models = {
        "original": {"path": base},
        "base": {"path": base},
        "aligned": {"path": base, "adapter": str(lora_zoo["aligned"])},
        "finetuned": [{"name": "math", "path": base, "adapter": str(lora_zoo["math"]), "task": "math"}],
    }
    path = write_experiment(
        tmp_path,
        lora_zoo,
        models=models,
        methods=[{"name": "sft"}, {"name": "aligned"}],
        benchmarks=[{"name": "somf_eval", "sample": 12, "seed": 3}],
        pairwise={"reference": "original"},
    )
    result = run_experiment(path, progress=False)
    assert result.stats.counts["pairwise_done"] == 2  # sft and aligned; not the original itself
    store = Store(result.store_location)
    cells = store.cells(result.run_id).set_index("cell_id")
    verdicts = store.verdicts_frame(result.run_id).merge(cells[["method"]], left_on="cell_id", right_index=True)
    absolute = verdicts[verdicts["label"].isin(["harmful", "harmless"])]
    pairs = verdicts[verdicts["label"].isin(["win", "loss", "draw"])]
    assert set(pairs["judge_id"]) == {"pairwise:original/refusal/gcg@2"} and set(pairs["method"]) == {"sft", "aligned"}
    assert set(absolute["method"]) == {"original", "sft", "aligned"}  # absolute harmfulness stays
    # each pair verdict follows from the two answers' own verdicts (lower P(harmful) wins)
    p_harm = {(m, i): s for m, i, s in absolute[["method", "item_id", "score"]].itertuples(index=False)}
    for method, item, label in pairs[["method", "item_id", "label"]].itertuples(index=False):
        gap = p_harm[("original", item)] - p_harm[(method, item)]
        assert label == ("win" if gap > 0 else "loss" if gap < 0 else "draw"), (method, item)
    assert set(pairs[pairs["method"] == "sft"]["label"]) - {"draw"}  # the adapter answers differently somewhere
    board = build_leaderboard(store, result.run_id)
    table = board.pairwise.set_index("method")
    assert set(table.index) == {"sft", "aligned"} and (table["n"] == 12).all()
    for method in ("sft", "aligned"):
        labels = pairs[pairs["method"] == method]["label"].value_counts()
        assert table.loc[method, "score"] == pytest.approx((labels.get("win", 0) - labels.get("loss", 0)) / 12 * 100)
    render_leaderboard(board, tmp_path / "site", ["csv"])
    assert len((tmp_path / "site" / "pairwise.csv").read_text().splitlines()) == 3  # header + 2 rows

    again = run_experiment(path, progress=False)
    assert again.stats.counts["cell_cached"] == 3 and again.stats.counts["pairwise_done"] == 0


@pytest.mark.parametrize(
    ("pairwise", "message"),
    [
        ({"reference": "orignal"}, r"pairwise.reference: 'orignal' \(did you mean 'original'\?\)"),
        ({"reference": "resta"}, r"'resta' names 2 variants \(resta\(gamma=0.5\), resta\(gamma=1.0\)\)"),
        ({"reference": "sft", "benchmarks": ["catqaa"]}, r"pairwise.benchmarks: 'catqaa' \(did you mean 'catqa'\?\)"),
        ({"reference": "sft"}, r"no benchmark is scored pairwise"),
    ],
)
def test_bad_pairwise_settings_are_refused_before_any_work(tmp_path, zoo, data_dir, pairwise, message):
    models = {
        "original": {"path": str(zoo["aligned"])},
        "aligned": {"path": str(zoo["aligned"])},
        "unaligned": {"path": str(zoo["unaligned"])},
        "finetuned": [{"name": "math", "path": str(zoo["math"]), "task": "math"}],
    }
    path = write_experiment(
        tmp_path,
        zoo,
        models=models,
        pairwise=pairwise,
        methods=[{"name": "sft"}, {"name": "resta", "grid": {"gamma": [0.5, 1.0]}}],
        benchmarks=[
            {"name": "catqa", "languages": ["en"], "sample": 2},
            *(
                [{"name": "somf_eval", "sample": 2}]
                if "benchmarks" not in pairwise and pairwise["reference"] != "sft"
                else []
            ),
        ],
    )
    with pytest.raises(ConfigError, match=message):
        run_experiment(path, progress=False)
    assert not (tmp_path / "out" / "results.sqlite").exists()


def test_run_stores_per_item_gsm8k_scores_that_compare_can_test(tmp_path, zoo, data_dir):
    """The issue's symptom: `realign compare --metric gsm8k_flexible` found nothing after `realign run`."""
    from click.testing import CliRunner

    from harness.cli import cli
    from leaderboards import Store

    path = write_experiment(
        tmp_path,
        zoo,
        methods=[{"name": "sft"}, {"name": "resta", "params": {"gamma": 0.5}}],
        benchmarks=[{"name": "gsm8k", "limit": 3, "task": "math"}],
    )
    result = run_experiment(path, progress=False)
    store = Store(result.store_location)
    per_item = store.item_scores_frame(result.run_id)
    assert sorted(set(per_item["metric"])) == ["gsm8k_flexible", "gsm8k_strict"]
    assert len(per_item) == 2 * 2 * 2 * 3  # 2 methods × 2 fine-tunes × 2 metrics × 3 items
    scores = store.scores_frame(result.run_id)
    overall = scores[(scores["metric"] == "gsm8k_flexible") & (scores["subset"] == {})].set_index("cell_id")["value"]
    flexible = per_item[per_item["metric"] == "gsm8k_flexible"].groupby("cell_id")["value"].mean()
    assert flexible.to_dict() == pytest.approx(overall.to_dict())
    store_file = result.store_location
    same = CliRunner().invoke(
        cli, ["compare", f"{store_file}@{result.run_id}", f"{store_file}@{result.run_id}", "--metric", "gsm8k_flexible"]
    )
    assert same.exit_code == 0, same.output
    assert "gsm8k_flexible" in same.output and "no significant regression" in same.output


def test_somf_mask_training_time_is_recorded_apart_from_the_merge(tmp_path, lora_zoo, data_dir, monkeypatch):
    """Cost columns: SOMF's mask training is its own column; a data-free merge trains nothing."""
    from leaderboards import Store

    monkeypatch.setenv("REALIGN_CACHE_DIR", str(tmp_path / "cache"))  # a fresh mask cache: the mask is trained here
    base = str(lora_zoo["base"])
    path = write_experiment(
        tmp_path,
        lora_zoo,
        models={
            "base": {"path": base},
            "aligned": {"path": base, "adapter": str(lora_zoo["aligned"])},
            "unaligned": {"path": base, "adapter": str(lora_zoo["unaligned"])},
            "finetuned": [{"name": "math", "path": base, "adapter": str(lora_zoo["math"]), "task": "math"}],
        },
        methods=[
            {
                "name": "somf",
                "params": {
                    "steps": 1,
                    "max_pairs": 16,
                    "batch_size": 4,
                    "micro_batch_size": 4,
                    "max_length": 48,
                    "max_prompt_length": 24,
                },
            },
            {"name": "resta"},
        ],
        benchmarks=[{"name": "catqa", "languages": ["en"], "sample": 2}],
    )
    result = run_experiment(path, progress=False)
    cells = Store(result.store_location).cells(result.run_id).set_index("method")
    (summary,) = [p for p in (tmp_path / "cache" / "somf").glob("*/somf.json")]
    import json

    assert cells.loc["somf", "train_seconds"] == pytest.approx(json.loads(summary.read_text())["train_seconds"])
    assert cells.loc["somf", "train_seconds"] > 0 and cells.loc["somf", "merge_seconds"] > 0
    assert cells.loc["resta", "train_seconds"] == 0.0 and cells.loc["resta", "merge_seconds"] > 0


def test_an_adapter_folder_as_a_model_path_is_resolved_onto_its_base(tmp_path, lora_zoo):
    """`path: ADAPTER_DIR` (no `adapter:`) means the adapter on the base its config names, the same
    model (and cache key) as `path: BASE, adapter: ADAPTER_DIR`; with no local base named it is refused."""
    import json
    import shutil

    from harness.experiment._config import ModelRef
    from harness.experiment._hashcache import HashCache
    from harness.experiment._plan import resolve_model

    exp = load_experiment(
        write_experiment(
            tmp_path,
            lora_zoo,
            models={
                "aligned": {"path": str(lora_zoo["aligned"])},
                "finetuned": [{"name": "math", "path": str(lora_zoo["math"])}],
            },
        )
    )
    hashes = HashCache(tmp_path / "hashes.json")
    folder = resolve_model(exp, "aligned", ModelRef(path=str(lora_zoo["aligned"])), hashes)
    explicit = resolve_model(
        exp, "aligned", ModelRef(path=str(lora_zoo["base"]), adapter=str(lora_zoo["aligned"])), hashes
    )
    assert (folder.path, folder.adapter) == (lora_zoo["base"], lora_zoo["aligned"])
    assert folder.hash == explicit.hash
    orphan = tmp_path / "orphan"
    shutil.copytree(lora_zoo["aligned"], orphan)
    config = json.loads((orphan / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "some-org/not-here"
    (orphan / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(
        ConfigError, match=r"models.aligned.path: .*orphan is a PEFT LoRA adapter.*models.aligned.adapter"
    ):
        resolve_model(exp, "aligned", ModelRef(path=str(orphan)), hashes)
