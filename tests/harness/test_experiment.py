"""The matrix runner end to end on tiny real checkpoints: plan, run, cache, resume, bad config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.errors import ConfigError
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
        "models": overrides.pop("models", None) or {
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


ALL_KILL_POINTS = ["merge:1", "merge:4", "generate:1", "generate:5", "judge:1", "judge:3", "judge:7",
                   "store:1", "store:4", "store:9"]


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
            env={**env, "REALIGN_KILL_AT": point}, capture_output=True, text=True, timeout=600,
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

    path = write_experiment(tmp_path, zoo, methods=[{"name": "sft"}, {"name": "resta", "params": {"gamma": 0.5}}])
    result = run_experiment(path, executor="ray", progress=False)
    assert result.stats.counts["merge_done"] == 2  # counted inside the Ray workers and sent back
    store = Store(result.store_location)
    assert len(store.complete_cells()) == 4
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
        tmp_path, lora_zoo,
        models={
            "original": {"path": base},
            "base": {"path": base},
            "aligned": {"path": base, "adapter": str(lora_zoo["aligned"])},
            "unaligned": {"path": base, "adapter": str(lora_zoo["unaligned"])},
            "finetuned": [{"name": "math", "path": base, "adapter": str(lora_zoo["math"]), "task": "math"}],
        },
        methods=[{"name": "sft"}, {"name": "safe_lora", "params": {"threshold": 0.95}}, {"name": "resta"}],
        benchmarks=[{"name": "catqa", "languages": ["en"], "sample": 3, "seed": 1},
                    {"name": "task_nll", "label": "nll-code", "categories": ["code"], "limit": 2}],
    )
    result = run_experiment(path, progress=False)
    store = Store(result.store_location)
    assert len(store.complete_cells()) == 4 * 2  # original, sft, safe_lora, resta
    summary = build_leaderboard(store, result.run_id).summary.set_index("method")
    # the pre-alignment baseline belongs to no fine-tune: recovered/retained are undefined, not 0 or 100
    assert math.isnan(summary.loc["original", "safety_recovered"])
    assert math.isnan(summary.loc["original", "utility_retained"])
    assert summary.loc["sft", "utility_retained"] == pytest.approx(1.0)
    scores = store.scores_frame(result.run_id)
    nll = scores[scores["metric"] == "nll"]
    assert len(nll) == 4 and (nll["value"] > 0).all() and not nll["higher_is_better"].any()
    assert nll["value"].nunique() == 4  # four different models
    provenance = [json.loads(p.read_text()) for p in (tmp_path / "out" / "checkpoints").glob("*/realign_merge.json")]
    safe_lora = [p for p in provenance if p["method"] == "safe_lora"]
    assert len(safe_lora) == 1 and safe_lora[0]["params"]["aligned_adapter"] == str(lora_zoo["aligned"])


def test_a_changed_judge_rejudges_but_does_not_regenerate(tmp_path, zoo, data_dir, monkeypatch):
    """Cells are named by their judges' content hashes, not their names: a new keyword list (same
    judge name and options) makes new cells and verdicts while generations and model scores stay cached."""
    import dataclasses

    from benchmarks.judges import _refusal_lists

    path = write_experiment(tmp_path, zoo, methods=[{"name": "sft"}],
                            benchmarks=[{"name": "catqa", "languages": ["en"], "sample": 3},
                                        {"name": "task_nll", "categories": ["code"], "limit": 2}])
    first = run_experiment(path, progress=False)
    assert first.stats.counts["cell_stored"] == 4 and first.stats.counts["model_score_done"] == 2
    gcg = _refusal_lists.REFUSAL_LISTS["gcg"]
    monkeypatch.setitem(_refusal_lists.REFUSAL_LISTS, "gcg",
                        dataclasses.replace(gcg, keywords=(*gcg.keywords, "a keyword from a newer release")))
    second = run_experiment(path, progress=False)
    assert second.stats.counts["cell_stored"] == 4 and second.stats.counts["cell_cached"] == 0
    assert second.stats.counts["judge_done"] == 2 and second.stats.counts["generate_cached"] == 2
    assert second.stats.counts["model_score_cached"] == 2 and second.stats.counts["model_score_done"] == 0


def test_an_adapter_folder_as_a_model_path_is_resolved_onto_its_base(tmp_path, lora_zoo):
    """`path: ADAPTER_DIR` (no `adapter:`) means the adapter on the base its config names, the same
    model (and cache key) as `path: BASE, adapter: ADAPTER_DIR`; with no local base named it is refused."""
    import json
    import shutil

    from harness.experiment._config import ModelRef
    from harness.experiment._hashcache import HashCache
    from harness.experiment._plan import resolve_model

    exp = load_experiment(write_experiment(tmp_path, lora_zoo, models={
        "aligned": {"path": str(lora_zoo["aligned"])},
        "finetuned": [{"name": "math", "path": str(lora_zoo["math"])}]}))
    hashes = HashCache(tmp_path / "hashes.json")
    folder = resolve_model(exp, "aligned", ModelRef(path=str(lora_zoo["aligned"])), hashes)
    explicit = resolve_model(exp, "aligned", ModelRef(path=str(lora_zoo["base"]), adapter=str(lora_zoo["aligned"])),
                             hashes)
    assert (folder.path, folder.adapter) == (lora_zoo["base"], lora_zoo["aligned"])
    assert folder.hash == explicit.hash
    orphan = tmp_path / "orphan"
    shutil.copytree(lora_zoo["aligned"], orphan)
    config = json.loads((orphan / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "some-org/not-here"
    (orphan / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"models.aligned.path: .*orphan is a PEFT LoRA adapter.*models.aligned.adapter"):
        resolve_model(exp, "aligned", ModelRef(path=str(orphan)), hashes)
