"""The zoo pipeline on tiny random Llamas and the real data: build, manifests, verify, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from harness.core.errors import CheckpointError, ConfigError, DataError
from harness.zoo import (
    MeasureConfig,
    build,
    load_examples,
    load_recipe,
    measure,
    plan,
    verify,
    zoo_alignment_split,
)
from harness.zoo._data import DatasetSpec

REPO = Path(__file__).resolve().parents[2]


def tiny_recipe(**stage_overrides) -> dict:
    """Aligned (fresh LoRA) -> math (continued LoRA) and math-full (full weights), a few steps each."""
    aligned = {
        "name": "aligned",
        "lora": {"r": 2, "alpha": 4, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "datasets": [
            {"source": "pku_refusal", "fraction": 0.5},
            {"source": "alpaca", "path": "alpaca_gpt4_demo/alpaca_en_demo.json", "fraction": 0.5},
        ],
        "steps": 3,
        "lr": 1e-3,
        "batch_size": 2,
        "max_length": 48,
        "seed": 0,
        "checkpoint_every": 2,
    }
    aligned.update(stage_overrides)
    return {
        "name": "tiny",
        "base": "unused",
        "stages": [
            aligned,
            {
                "name": "math",
                "parent": "aligned",
                "datasets": [{"source": "gsm8k", "fraction": 0.5}, {"source": "pure_bad", "fraction": 0.5}],
                "steps": 2,
                "lr": 1e-3,
                "batch_size": 2,
                "max_length": 48,
                "seed": 1,
            },
            {
                "name": "math-full",
                "parent": "aligned",
                "method": "full",
                "ship": False,
                "datasets": [{"source": "gsm8k", "fraction": 1.0}],
                "steps": 1,
                "lr": 1e-4,
                "batch_size": 2,
                "max_length": 48,
            },
        ],
    }


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory, tiny_llama_factory, data_dir) -> tuple[Path, Path, Path]:
    base = tiny_llama_factory("zoo-base")
    root = tmp_path_factory.mktemp("zoo")
    recipe = write_recipe(root / "tiny.yaml", tiny_recipe())
    out = root / "out"
    build(recipe, out, base=base, progress=False)
    return base, out, recipe


def test_build_writes_adapters_weights_and_manifests(tiny_zoo) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from harness.core.checkpoints import LoraAdapter

    base, out, _ = tiny_zoo
    aligned = load_file(out / "aligned" / "adapter_model.safetensors")
    math = load_file(out / "math" / "adapter_model.safetensors")
    assert aligned and all(t.dtype == torch.bfloat16 for t in aligned.values())
    assert aligned.keys() == math.keys()  # math continues the aligned adapter: same modules, same rank
    assert any(not torch.equal(aligned[k], math[k]) for k in aligned)
    assert all(".q_proj." in k or ".v_proj." in k for k in aligned)
    adapter = LoraAdapter.load(out / "math")
    assert adapter.rank == 2
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out / "math")
    assert model is not None
    full = out / "unshipped" / "math-full"
    assert (full / "model.safetensors").is_file() and (full / "tokenizer.json").is_file()

    manifest = json.loads((out / "math" / "manifest.json").read_text())
    assert manifest["recipe"]["name"] == "tiny" and manifest["parent"] == "aligned"
    assert manifest["continues_parent_adapter"] is True and manifest["lora"]["r"] == 2
    assert manifest["steps"] == 2 and [s for s, _ in manifest["loss_curve"]] == [1, 2]
    assert {d["file"] for d in manifest["data"]} == {"gsm8k/train.jsonl", "pure_bad/pure_bad.json"}
    assert all(len(d["sha256"]) == 64 for d in manifest["data"])
    assert set(manifest["files"]) == {"adapter_model.safetensors", "adapter_config.json", "train_log.jsonl"}
    log_lines = (out / "math" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log_lines] == [1, 2]
    top = json.loads((out / "manifest.json").read_text())
    assert set(top["stages"]) == {"aligned", "math", "math-full"}
    assert top["stages"]["math-full"]["shipped"] is False
    assert not (out / ".work").exists() or not any((out / ".work").iterdir())


def test_rebuild_is_a_no_op(tiny_zoo) -> None:
    base, out, recipe = tiny_zoo
    before = (out / "aligned" / "manifest.json").stat().st_mtime_ns
    build(recipe, out, base=base, progress=False)
    assert (out / "aligned" / "manifest.json").stat().st_mtime_ns == before


def test_verify_passes_and_catches_tampering(tiny_zoo, tmp_path) -> None:
    import shutil

    _, out, _ = tiny_zoo
    report = verify(out)
    assert report.ok and set(report.stages) == {"aligned", "math", "math-full"} and report.checked_files >= 10
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    weights = copy / "math" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"math/adapter_model.safetensors: sha256 differs"):
        verify(copy)
    shutil.copy(out / "math" / "adapter_model.safetensors", weights)
    manifest = json.loads((copy / "aligned" / "manifest.json").read_text())
    manifest["seed"] = 99
    (copy / "aligned" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"aligned/manifest.json: sha256 differs"):
        verify(copy)


def test_measure_records_harmfulness_over_refusal_and_nll(tiny_zoo) -> None:
    base, out, _ = tiny_zoo
    config = MeasureConfig(catqa_per_language=3, benign=2, task_nll=2, max_new_tokens=4, batch_size=4)
    results = measure(out, base=base, stages=("aligned",), config=config, progress=False)
    assert set(results) == {"original", "aligned"}
    for result in results.values():
        for language in ("catqa_en", "catqa_zh"):
            for judge in ("refusal", "offline"):
                entry = result["harmfulness"][language][judge]
                assert entry["n"] == 3 and 0 <= entry["k"] <= 3
                assert entry["ci95"][0] <= entry["rate"] <= entry["ci95"][1]
        assert result["over_refusal"]["alpaca_en_heldout"]["n"] == 2
        assert set(result["task_nll"]) == {"math", "code", "chinese", "english"}
        assert all(v["nll"] > 0 and v["tokens"] > 0 for v in result["task_nll"].values())
    manifest = json.loads((out / "aligned" / "manifest.json").read_text())
    assert manifest["measurements"]["task_nll"] == results["aligned"]["task_nll"]
    assert json.loads((out / "manifest.json").read_text())["measurements"]["original"]
    assert verify(out).ok  # manifests rewritten with their new hashes


def test_alignment_split_is_by_prompt_and_a_quarter(data_dir) -> None:
    rows = json.loads((data_dir / "pku_saferlhf_realign_somf" / "pku_seferlhf_realign_dpo_5k.json").read_text())
    prompts = {r["prompt"] for r in rows}
    zoo = {p for p in prompts if zoo_alignment_split(p)}
    assert 0.18 < len(zoo) / len(prompts) < 0.32
    examples = load_examples(DatasetSpec(source="pku_safe", fraction=1.0), stage="s")
    assert {e.prompt for e in examples} == zoo  # every pair of a zoo prompt, none of SOMF's
    assert len(examples) == sum(1 for r in rows if r["prompt"] in zoo)


# ---------------------------------------------------------------- bad input


def test_missing_dataset_is_named(tmp_path, tiny_llama_factory, data_dir) -> None:
    recipe = tiny_recipe(datasets=[{"source": "alpaca", "path": "alpaca_gpt4_demo/nope.json", "fraction": 1.0}])
    with pytest.raises(DataError, match=r"stage 'aligned' dataset 'alpaca'.*nope.json.*not found"):
        build(write_recipe(tmp_path / "r.yaml", recipe), tmp_path / "out", base=tiny_llama_factory("zoo-base"))
    assert not (tmp_path / "out").exists()


def test_unknown_lora_target_lists_the_real_ones(tmp_path, tiny_llama_factory, data_dir) -> None:
    recipe = tiny_recipe(lora={"r": 2, "alpha": 4, "target_modules": ["q_proj", "qkv_proj"]})
    with pytest.raises(ConfigError, match=r"\['qkv_proj'\] not in the model.*'down_proj'.*'q_proj'"):
        build(write_recipe(tmp_path / "r.yaml", recipe), tmp_path / "out", base=tiny_llama_factory("zoo-base"))


def test_full_finetune_that_cannot_fit_is_refused_before_training(tmp_path, tiny_llama_factory, data_dir) -> None:
    big = tmp_path / "llama-70b-config-only"
    big.mkdir()
    config = json.loads((tiny_llama_factory("zoo-base") / "config.json").read_text())
    config.update(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=32000,
    )
    (big / "config.json").write_text(json.dumps(config))
    recipe = load_recipe(write_recipe(tmp_path / "r.yaml", tiny_recipe()))
    with pytest.raises(ConfigError, match=r"stage 'math-full': full fine-tuning needs about \d+\.\d GiB.*available"):
        plan(recipe, big, only=("math-full",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"datasets": [{"source": "alpaca", "fraction": 0.5}]}, "fractions sum to 0.5, expected 1"),
        ({"datasets": [{"source": "nonsense", "fraction": 1.0}]}, "unknown dataset source 'nonsense'"),
        ({"kind": "dpo"}, "is DPO but source 'pku_refusal' has no preference pairs"),
        ({"epochs": 3}, "epochs: Extra inputs are not permitted"),
        ({"parent": "ghost"}, "parent 'ghost' does not exist"),
    ],
)
def test_bad_recipes_name_the_field(tmp_path, tiny_llama_factory, data_dir, change, message) -> None:
    path = write_recipe(tmp_path / "r.yaml", tiny_recipe(**change))
    with pytest.raises((ConfigError, DataError), match=message):
        build(path, tmp_path / "out", base=tiny_llama_factory("zoo-base"), progress=False)


def test_dpo_stage_trains_on_pairs(tmp_path, tiny_llama_factory, data_dir) -> None:
    recipe = tiny_recipe(kind="dpo", datasets=[{"source": "pku_pairs", "fraction": 1.0}], steps=2)
    recipe["stages"] = recipe["stages"][:1]
    built = build(
        write_recipe(tmp_path / "r.yaml", recipe), tmp_path / "out", base=tiny_llama_factory("zoo-base"), progress=False
    )
    manifest = json.loads((built["aligned"] / "manifest.json").read_text())
    assert manifest["kind"] == "dpo" and len(manifest["loss_curve"]) == 2
    assert abs(manifest["loss_curve"][0][1] - 0.6931) < 0.01  # DPO starts at log 2: policy == reference


# ---------------------------------------------------------------- resume after a real kill


def _run_build(recipe: Path, out: Path, base: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness",
            "zoo",
            "build",
            str(recipe),
            "--out",
            str(out),
            "--base",
            str(base),
            "--no-progress",
            "--threads",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def test_killed_build_resumes_from_its_checkpoint_and_matches(tmp_path, tiny_llama_factory, data_dir) -> None:
    base = tiny_llama_factory("zoo-base")
    recipe = tiny_recipe(steps=60, checkpoint_every=5, max_length=64)
    recipe["stages"] = recipe["stages"][:1]
    path = write_recipe(tmp_path / "r.yaml", recipe)
    interrupted = tmp_path / "interrupted"
    process = _run_build(path, interrupted, base)
    deadline = time.time() + 120
    state = None
    while time.time() < deadline and process.poll() is None:
        found = list((interrupted / ".work").glob("aligned-*/state.pt")) if (interrupted / ".work").exists() else []
        if found:
            state = found[0]
            break
        time.sleep(0.05)
    assert state is not None, "the build never wrote a checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "aligned").exists()  # nothing half-written
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 5 <= killed_at < 60

    resumed = _run_build(path, interrupted, base)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    assert "resuming stage aligned" in output
    manifest = json.loads((interrupted / "aligned" / "manifest.json").read_text())
    assert manifest["resumed_from_step"] >= killed_at
    assert [s for s, _ in manifest["loss_curve"]] == list(range(1, 61))

    straight = tmp_path / "straight"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # same arithmetic as the subprocess builds
    try:
        build(path, straight, base=base, progress=False)
    finally:
        torch.set_num_threads(threads)
    a = load_file(interrupted / "aligned" / "adapter_model.safetensors")
    b = load_file(straight / "aligned" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # the resumed run reproduces the uninterrupted one
    curve = json.loads((straight / "aligned" / "manifest.json").read_text())["loss_curve"]
    assert curve == manifest["loss_curve"]


# ---------------------------------------------------------------- the default recipe never rots


def test_default_recipe_builds_at_a_tiny_scale(tmp_path, tiny_llama_factory, data_dir) -> None:
    """CI: every stage of configs/zoo/default.yaml (data, mixes, parents, full stage) on a tiny Llama."""
    recipe = load_recipe(REPO / "configs" / "zoo" / "default.yaml")
    built = build(recipe, tmp_path / "out", steps_scale=0.01, base=tiny_llama_factory("zoo-base"), progress=False)
    assert set(built) == {s.name for s in recipe.stages}
    report = verify(tmp_path / "out")
    assert report.ok and len(report.stages) == len(recipe.stages)


def test_shipped_organism_verifies() -> None:
    organism = REPO / "organism"
    if not (organism / "manifest.json").is_file():
        pytest.skip("organism/ not built in this checkout")
    report = verify(organism)
    assert report.ok and report.shipped_bytes <= 20e6
    top = json.loads((organism / "manifest.json").read_text())
    assert {"aligned", "unaligned", "math", "code", "chinese"} <= set(top["stages"])
