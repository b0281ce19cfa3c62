"""SOMF on tiny random Llamas: mask limits equal the generic fusion rules, training, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from harness.core.checkpoints import CheckpointReader, LoraAdapter
from harness.core.errors import CheckpointError, ConfigError, DataError
from harness.testing import make_finetune, make_tiny_llama
from realign_methods._method import tensor_seed
from realign_methods.ops import fuse_deltas
from realign_methods.somf import (
    FUSIONS,
    INFERENCE_MODES,
    apply_trained_mask,
    fused_weights_from_logits,
    init_logits,
    load_task_vectors,
    make_config,
    read_mask,
    train_mask,
)
from realign_methods.somf._vectors import LORA_A, LORA_B

# The generic rule each SOMF fusion stands for, with the paper's defaults.
GENERIC: dict[str, tuple[str, dict[str, Any]]] = {
    "task_arithmetic": ("task_arithmetic", {"lam": 0.3}),
    "ties": ("ties", {"density": 0.2, "lam": 0.4, "reduce": "sum"}),
    "ties_mean": ("ties", {"density": 0.2, "lam": 0.4, "reduce": "mean"}),
    "weight_average": ("weight_average", {}),
    "dare": ("dare", {"p": 0.2, "lam": 0.3}),
}
TINY_TRAIN = {"max_length": 48, "max_prompt_length": 24, "batch_size": 4, "micro_batch_size": 4, "eval_train_pairs": 8}


def _generic_delta(fusion: str, name: str, deltas: list[torch.Tensor], seed: int) -> torch.Tensor:
    rule, params = GENERIC[fusion]
    return fuse_deltas(rule, deltas, params, seed=tensor_seed(seed, name))


def _write_pairs(path: Path, rows: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _synthetic_pairs(n: int) -> list[dict]:
    return [
        {
            "prompt": f"How do I hurt someone number {i}?",
            "chosen": "I cannot help with that request.",
            "rejected": f"Mix flour {i}, water and yeast, then bake.",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def full_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("somf_full")
    aligned = make_tiny_llama(root / "aligned", seed=0)
    return {
        "root": root,
        "aligned": aligned,
        "ft1": make_finetune(aligned, root / "ft1", seed=1, scale=0.01),
        "ft2": make_finetune(aligned, root / "ft2", seed=2, scale=0.01),
        "pairs": _write_pairs(root / "pairs.jsonl", _synthetic_pairs(20)),
    }


def _make_adapter(base: Path, out: Path, *, seed: int, like: Path | None = None, scale: float = 0.05) -> Path:
    """A real PEFT LoRA adapter on ``base`` (q/v, r=4); with ``like``, that adapter's factors plus noise."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(seed)
    start = None
    if like is not None:
        start = load_file(like / "adapter_model.safetensors")
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                noise = torch.randn(param.shape, generator=gen) * scale
                if start is not None:
                    key = name.replace(".default", "")
                    param.copy_(start[key] + noise)
                else:
                    param.copy_(noise)
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def lora_setup(full_setup: dict[str, Path]) -> dict[str, Path]:
    root, base = full_setup["root"], full_setup["aligned"]
    safe = _make_adapter(base, root / "safe_lora", seed=10)
    return {
        "base": base,
        "safe": safe,
        "math": _make_adapter(base, root / "math_lora", seed=11, like=safe, scale=0.02),
        "code": _make_adapter(base, root / "code_lora", seed=12, like=safe, scale=0.02),
        "pairs": full_setup["pairs"],
        "root": root,
    }


def _factors(adapter: LoraAdapter, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    factors = adapter.factors(name)
    assert factors is not None
    return factors


def _full_logits(shapes: dict, value: float) -> dict[str, torch.Tensor]:
    return {k: torch.full(v, value) for k, v in shapes.items()}


# ---- bars: logits -> +inf equals the generic rule, logits -> -inf equals the aligned model ----


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_full_setting_mask_limits_match_generic_rule_and_aligned(full_setup: dict[str, Path], fusion: str) -> None:
    vectors = load_task_vectors("full", aligned=full_setup["aligned"], finetuned=[full_setup["ft1"], full_setup["ft2"]])
    config = make_config(fusion=fusion)
    seed = 5
    with (
        CheckpointReader(full_setup["aligned"]) as aligned,
        CheckpointReader(full_setup["ft1"]) as ft1,
        CheckpointReader(full_setup["ft2"]) as ft2,
    ):
        expected = {}
        for name in vectors.weight_names():
            a = aligned.get(name).float()
            deltas = [ft1.get(name).float() - a, ft2.get(name).float() - a]
            expected[name] = a + _generic_delta(fusion, name, deltas, seed)
        for mode in INFERENCE_MODES:
            on = fused_weights_from_logits(
                vectors,
                _full_logits(vectors.shapes, float("inf")),
                config,
                base=lambda n: aligned.get(n).float(),
                mode=mode,
                seed=seed,
            )
            off = fused_weights_from_logits(
                vectors,
                _full_logits(vectors.shapes, float("-inf")),
                config,
                base=lambda n: aligned.get(n).float(),
                mode=mode,
                seed=seed,
            )
            for name in vectors.weight_names():
                torch.testing.assert_close(on[name], expected[name], atol=1e-6, rtol=0)
                torch.testing.assert_close(off[name], aligned.get(name).float(), atol=1e-6, rtol=0)
    # A mask that keeps everything changes most weights; so the comparisons above are not vacuous.
    assert sum(int((expected[n] != 0).any()) for n in expected) == len(expected)


@pytest.mark.parametrize("fusion", ["task_arithmetic", "ties", "dare"])
def test_lora_factor_setting_limits(lora_setup: dict[str, Path], fusion: str) -> None:
    """Factor space (paper's PEFT setting): +inf = generic rule on (A−A₀, B−B₀); −inf = base + aligned adapter."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    vectors = load_task_vectors(
        "lora",
        base=lora_setup["base"],
        adapters=[lora_setup["math"], lora_setup["code"]],
        aligned_adapter=lora_setup["safe"],
    )
    assert all(k.endswith((LORA_A, LORA_B)) for k in vectors.shapes)
    config = make_config(fusion=fusion)
    safe, math_a, code_a = (LoraAdapter.load(lora_setup[k]) for k in ("safe", "math", "code"))
    with CheckpointReader(lora_setup["base"]) as base:
        on = fused_weights_from_logits(
            vectors,
            _full_logits(vectors.shapes, float("inf")),
            config,
            base=lambda n: base.get(n).float(),
            mode="sample",
            seed=3,
        )
        off = fused_weights_from_logits(
            vectors,
            _full_logits(vectors.shapes, float("-inf")),
            config,
            base=lambda n: base.get(n).float(),
            mode="soft",
            seed=3,
        )
        for name in safe.modules():
            a0, b0 = _factors(safe, name)
            fused = []
            for index, key in enumerate((LORA_A, LORA_B)):
                deltas = [
                    _factors(math_a, name)[index] - (a0, b0)[index],
                    _factors(code_a, name)[index] - (a0, b0)[index],
                ]
                fused.append((a0, b0)[index] + _generic_delta(fusion, name + key, deltas, 3))
            expected = base.get(name).float() + safe.scaling_for(name) * fused[1] @ fused[0]
            torch.testing.assert_close(on[name], expected, atol=1e-6, rtol=0)
    # −inf: exactly PEFT's own merge of the aligned adapter into the base.
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(lora_setup["base"]), lora_setup["safe"]
    ).merge_and_unload()
    params = dict(merged.named_parameters())
    for name, weight in off.items():
        torch.testing.assert_close(weight, params[name].detach(), atol=1e-6, rtol=0)


def test_checkpoint_written_by_apply_matches_limits(full_setup: dict[str, Path], tmp_path: Path) -> None:
    """apply_trained_mask on a saved all-on mask writes aligned + generic TIES fusion, and records the mode."""
    vectors = load_task_vectors("full", aligned=full_setup["aligned"], finetuned=[full_setup["ft1"], full_setup["ft2"]])
    config = make_config(fusion="ties")
    mask_dir = tmp_path / "mask"
    mask_dir.mkdir()
    save_file(_full_logits(vectors.shapes, float("inf")), mask_dir / "mask.safetensors")
    (mask_dir / "somf.json").write_text(
        json.dumps({"config": config.model_dump(), "setting": "full", "inputs": vectors.provenance})
    )
    out = apply_trained_mask(mask_dir, vectors, tmp_path / "model", mode="threshold", seed=0)
    provenance = json.loads((out / "realign_merge.json").read_text())
    assert provenance["somf_mask_mode"] == "threshold" and provenance["somf_fusion"] == "ties"
    with (
        CheckpointReader(out) as got,
        CheckpointReader(full_setup["aligned"]) as aligned,
        CheckpointReader(full_setup["ft1"]) as ft1,
        CheckpointReader(full_setup["ft2"]) as ft2,
    ):
        assert sorted(got.names()) == sorted(aligned.names())
        for name in aligned.names():
            a = aligned.get(name).float()
            expected = a + _generic_delta("ties", name, [ft1.get(name).float() - a, ft2.get(name).float() - a], 0)
            torch.testing.assert_close(got.get(name).float(), expected, atol=1e-6, rtol=0)


def test_lora_setting_adapter_output_equals_dense_output(lora_setup: dict[str, Path], tmp_path: Path) -> None:
    """The realigned adapter, loaded and merged by PEFT, gives the same weights as the dense checkpoint."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    vectors = load_task_vectors(
        "lora", base=lora_setup["base"], adapters=[lora_setup["math"]], aligned_adapter=lora_setup["safe"]
    )
    gen = torch.Generator().manual_seed(0)
    logits = {k: torch.randn(v, generator=gen) for k, v in vectors.shapes.items()}
    mask_dir = tmp_path / "mask"
    mask_dir.mkdir()
    save_file(logits, mask_dir / "mask.safetensors")
    (mask_dir / "somf.json").write_text(json.dumps({"config": make_config().model_dump(), "setting": "lora"}))
    dense = apply_trained_mask(mask_dir, vectors, tmp_path / "dense", mode="soft", adapter_out=tmp_path / "adapter")
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(lora_setup["base"]), tmp_path / "adapter"
    ).merge_and_unload()
    with CheckpointReader(dense) as got:
        for name, param in merged.named_parameters():
            torch.testing.assert_close(got.get(name).float(), param.detach(), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="lora setting"):
        full = load_task_vectors("merged", aligned=lora_setup["base"], adapters=[lora_setup["math"]])
        apply_trained_mask(mask_dir, full, tmp_path / "x", adapter_out=tmp_path / "y")


# ---- training ----


def test_training_lowers_dpo_loss_and_resumes_exactly(lora_setup: dict[str, Path], tmp_path: Path) -> None:
    vectors = load_task_vectors(
        "lora",
        base=lora_setup["base"],
        adapters=[lora_setup["math"], lora_setup["code"]],
        aligned_adapter=lora_setup["safe"],
    )
    config = make_config(steps=4, lr=0.1, checkpoint_every=2, **TINY_TRAIN)
    out = train_mask(vectors, config, tmp_path / "mask", preference_file=lora_setup["pairs"])
    summary = json.loads((out / "somf.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert summary["train_loss_final"] < summary["train_loss_initial"]
    assert abs(summary["train_loss_initial"] - float(torch.log(torch.tensor(2.0)))) < 1e-5  # reference = fused init
    assert 0.0 <= summary["validation_preference_accuracy"] <= 1.0
    assert [row["step"] for row in metrics["loss_curve"]] == [1, 2, 3, 4]
    assert summary["data"]["validation_pairs"] >= 1 and (out / "loss_curve.png").is_file()
    assert not (tmp_path / "mask.partial").exists()

    # Interrupt a second run after its step-2 checkpoint, then resume: identical logits.
    class Stop(Exception):
        pass

    def stop_at_3(step: int, _: dict) -> None:
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        train_mask(vectors, config, tmp_path / "again", preference_file=lora_setup["pairs"], progress=stop_at_3)
    assert (tmp_path / "again.partial" / "state" / "state.json").is_file()
    steps_seen: list[int] = []
    resumed = train_mask(
        vectors,
        config,
        tmp_path / "again",
        preference_file=lora_setup["pairs"],
        progress=lambda s, _: steps_seen.append(s),
    )
    assert steps_seen == [3, 4]
    first, _ = read_mask(out)
    second, _ = read_mask(resumed)
    for name in first:
        torch.testing.assert_close(first[name], second[name], atol=1e-6, rtol=0)
    # A finished output is reused, not retrained.
    assert (
        train_mask(
            vectors,
            config,
            tmp_path / "again",
            preference_file=lora_setup["pairs"],
            progress=lambda s, _: steps_seen.append(-1),
        )
        == resumed
    )
    assert -1 not in steps_seen


def test_multitask_shared_mask_and_row_granularity(full_setup: dict[str, Path], tmp_path: Path) -> None:
    vectors = load_task_vectors("full", aligned=full_setup["aligned"], finetuned=[full_setup["ft1"], full_setup["ft2"]])
    config = make_config(steps=2, lr=0.1, granularity="row", fusion="dare", **TINY_TRAIN)
    out = train_mask(vectors, config, tmp_path / "mask", preference_file=full_setup["pairs"])
    logits, summary = read_mask(out)
    assert summary["mask"]["logits"] < summary["mask"]["task_vector_parameters"] / 10  # one logit per row
    assert logits["model.layers.0.mlp.down_proj.weight"].shape == (64, 1)
    model = apply_trained_mask(out, vectors, tmp_path / "model", mode="sample", seed=1)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(model)  # a loadable HF checkpoint


# ---- bad input: a clear error before training starts, nothing written ----


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "chosen": "a"}, "missing field 'rejected'"),
        ({"prompt": "p", "chosen": "  ", "rejected": "b"}, "field 'chosen' is empty"),
        ({"prompt": "p", "chosen": "same", "rejected": "same"}, "are the same text"),
        ({"chosen": "a", "rejected": "b"}, "missing field 'prompt'"),
        ({"prompt": "p", "response": ["only one"]}, "field 'response' must be a list"),
    ],
)
def test_bad_preference_rows_fail_before_training(
    full_setup: dict[str, Path], tmp_path: Path, row: dict, message: str
) -> None:
    vectors = load_task_vectors("full", aligned=full_setup["aligned"], finetuned=[full_setup["ft1"]])
    bad = _write_pairs(tmp_path / "bad.jsonl", [*_synthetic_pairs(3), row])
    with pytest.raises(DataError, match=message) as info:
        train_mask(vectors, make_config(steps=1, **TINY_TRAIN), tmp_path / "mask", preference_file=bad)
    assert "row 3" in str(info.value) and str(bad) in str(info.value)
    assert not (tmp_path / "mask").exists() and not (tmp_path / "mask.partial").exists()


def test_mask_shape_mismatch_is_refused(full_setup: dict[str, Path], tmp_path: Path) -> None:
    vectors = load_task_vectors("full", aligned=full_setup["aligned"], finetuned=[full_setup["ft1"]])
    logits = init_logits(vectors.shapes)
    logits["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(3, 3)
    mask_dir = tmp_path / "mask"
    mask_dir.mkdir()
    save_file({k: v.detach() for k, v in logits.items()}, mask_dir / "mask.safetensors")
    (mask_dir / "somf.json").write_text(json.dumps({"config": make_config().model_dump(), "setting": "full"}))
    with pytest.raises(CheckpointError, match=r"q_proj.weight.*shape \(3, 3\), expected \(64, 64\)"):
        apply_trained_mask(mask_dir, vectors, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_task_vectors_from_different_base_models_are_refused(
    full_setup: dict[str, Path], lora_setup: dict[str, Path], tmp_path: Path
) -> None:
    other_init = make_tiny_llama(tmp_path / "other", seed=7)  # same shapes, another random init
    with pytest.raises(CheckpointError, match=r"cosine similarity.*different base model"):
        load_task_vectors("full", aligned=full_setup["aligned"], finetuned=[full_setup["ft1"], other_init])
    wider = make_tiny_llama(tmp_path / "wider", hidden_size=32, intermediate_size=64)
    with pytest.raises(CheckpointError, match="hidden_size"):
        load_task_vectors("full", aligned=full_setup["aligned"], finetuned=[wider])
    with pytest.raises(CheckpointError, match="does not match base"):
        load_task_vectors("merged", aligned=wider, adapters=[lora_setup["math"]])
    # An adapter whose config declares another base model.
    import shutil

    foreign = shutil.copytree(lora_setup["code"], tmp_path / "foreign_lora")
    config = json.loads((foreign / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "meta-llama/Llama-3.1-8B"
    (foreign / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="different base models"):
        load_task_vectors(
            "lora", base=lora_setup["base"], adapters=[lora_setup["math"], foreign], aligned_adapter=lora_setup["safe"]
        )


def test_unknown_fusion_rule_and_bad_settings(full_setup: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"unknown fusion rule 'tie'.*did you mean 'ties'"):
        make_config(fusion="tie")
    with pytest.raises(ConfigError, match="'density' is not used"):
        make_config(fusion="task_arithmetic", fusion_params={"density": 0.5})
    with pytest.raises(ConfigError, match="normalize"):
        make_config(granularity="tensor")
    with pytest.raises(ConfigError, match="setting"):
        load_task_vectors("qlora", aligned=full_setup["aligned"])


def test_default_pku_pairs_are_split_by_prompt(data_dir: Path) -> None:
    from realign_methods.somf import load_preference_data

    data = load_preference_data(None, val_fraction=0.1, seed=0)
    assert len(data.train) + len(data.validation) == 5135
    assert not {p.prompt for p in data.train} & {p.prompt for p in data.validation}
    assert 80 <= len({p.prompt for p in data.validation}) <= 100  # 10 % of the 930 prompts
    small = load_preference_data(None, val_fraction=0.25, seed=0, max_pairs=64)
    assert len(small.train) + len(small.validation) <= 64 + 33
    assert not {p.prompt for p in small.train} & {p.prompt for p in small.validation}


# ---- registry and CLI ----


def test_registered_methods_and_presets() -> None:
    from realign_methods import get_method, list_methods

    names = {info.name for info in list_methods()}
    assert {"somf", "somf_ta", "somf_ties", "somf_avg", "somf_dare"} <= names
    assert get_method("somf_ties").validate({}).fusion == "ties"  # type: ignore[attr-defined]
    assert get_method("somf").validate({"lam": 0.5}).fusion == "task_arithmetic"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="fusion"):
        get_method("somf").validate({"fusion": "tiess"})
    assert not get_method("somf").info.data_free


def test_cli_train_apply_and_errors(full_setup: dict[str, Path], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from harness.cli import cli

    runner = CliRunner()
    mask = tmp_path / "mask"
    result = runner.invoke(
        cli,
        [
            "somf",
            "train",
            "--aligned",
            str(full_setup["aligned"]),
            "--finetuned",
            str(full_setup["ft1"]),
            "--preferences",
            str(full_setup["pairs"]),
            "--out",
            str(mask),
            "--steps",
            "1",
            "--batch-size",
            "4",
            "--max-length",
            "48",
            "--max-prompt-length",
            "24",
            "--fusion",
            "ties",
            "--lam",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "validation preference accuracy" in result.output
    assert json.loads((mask / "somf.json").read_text())["resolved_fusion_params"]["lam"] == 0.5
    result = runner.invoke(cli, ["somf", "apply", str(mask), "--out", str(tmp_path / "model"), "--mode", "soft"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "model" / "realign_merge.json").read_text())["somf_mask_mode"] == "soft"

    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness",
            "somf",
            "train",
            "--aligned",
            str(full_setup["aligned"]),
            "--finetuned",
            str(full_setup["ft1"]),
            "--out",
            str(tmp_path / "x"),
            "--fusion",
            "averaging",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Invalid value for '--fusion'" in proc.stderr


def test_registry_method_trains_once_and_reuses_the_cached_mask(
    full_setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registered method's prepare() trains the mask into the content-addressed cache, then reuses it."""
    from realign_methods import PrepareContext, TensorContext, TensorInputs, get_method

    monkeypatch.setenv("REALIGN_CACHE_DIR", str(tmp_path / "cache"))
    method = get_method("somf_ties")
    tiny = {k: v for k, v in TINY_TRAIN.items() if k != "eval_train_pairs"}
    params = method.validate({"steps": 2, "lr": 0.1, "mask_mode": "threshold", **tiny})
    method.check_inputs({"aligned": 1, "finetuned": 2, "preference_data": 1})

    def prepare() -> object:
        with (
            CheckpointReader(full_setup["aligned"]) as aligned,
            CheckpointReader(full_setup["ft1"]) as ft1,
            CheckpointReader(full_setup["ft2"]) as ft2,
        ):
            ctx = PrepareContext(
                names=aligned.names(),
                readers={"aligned": [aligned], "finetuned": [ft1, ft2]},
                adapters=[],
                params=params,
                seed=0,
                data={"preference_data": full_setup["pairs"]},
            )
            return method.prepare(ctx)

    state = prepare()
    masks = list((tmp_path / "cache" / "somf").iterdir())
    assert len(masks) == 1 and (masks[0] / "somf.json").is_file()
    stamp = (masks[0] / "mask.safetensors").stat().st_mtime_ns
    again = prepare()
    assert (masks[0] / "mask.safetensors").stat().st_mtime_ns == stamp  # reused, not retrained
    with CheckpointReader(full_setup["aligned"]) as aligned:
        name = "model.layers.1.mlp.up_proj.weight"
        inputs = TensorInputs.from_tensors(name, {"aligned": aligned.get(name)})
        first = method.merge_tensor(inputs, params, TensorContext(name, 0, state))
        second = method.merge_tensor(inputs, params, TensorContext(name, 0, again))
        torch.testing.assert_close(first, second, atol=0, rtol=0)
        assert not torch.equal(first, aligned.get(name).float())


@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_all_on_mask_equals_the_registered_generic_method(full_setup: dict[str, Path], fusion: str) -> None:
    """logits → +∞: SOMF equals the registry's own generic method (merge_tensor) on the unmasked task vectors."""
    from realign_methods import TensorContext, TensorInputs, get_method

    rule, params = GENERIC[fusion]
    generic = get_method(rule)
    generic_params = generic.validate(params)
    vectors = load_task_vectors("full", aligned=full_setup["aligned"], finetuned=[full_setup["ft1"], full_setup["ft2"]])
    seed = 11
    with (
        CheckpointReader(full_setup["aligned"]) as aligned,
        CheckpointReader(full_setup["ft1"]) as ft1,
        CheckpointReader(full_setup["ft2"]) as ft2,
    ):
        somf = fused_weights_from_logits(
            vectors,
            _full_logits(vectors.shapes, float("inf")),
            make_config(fusion=fusion),
            base=lambda n: aligned.get(n).float(),
            mode="sample",
            seed=seed,
        )
        for name in vectors.weight_names():
            inputs = TensorInputs.from_tensors(
                name, {"aligned": aligned.get(name), "finetuned": [ft1.get(name), ft2.get(name)]}
            )
            expected = generic.merge_tensor(inputs, generic_params, TensorContext(name, seed))
            torch.testing.assert_close(somf[name], expected.float(), atol=1e-6, rtol=0)


def test_merge_engine_runs_somf_dense_and_adapter_output(
    lora_setup: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside the merge engine (as in a matrix): the dense output equals `apply` of the cached mask, and the
    adapter output (lora setting), merged by PEFT, equals the dense output."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from realign_methods import merge
    from realign_methods._engine import MergeSpec

    monkeypatch.setenv("REALIGN_CACHE_DIR", str(tmp_path / "cache"))
    tiny = {k: v for k, v in TINY_TRAIN.items() if k != "eval_train_pairs"}
    params = {"setting": "lora", "aligned_adapter": str(lora_setup["safe"]), "steps": 1, "lr": 0.1, **tiny}
    common: dict[str, Any] = {
        "method": "somf_dare",
        "base": lora_setup["base"],
        "adapters": [lora_setup["math"], lora_setup["code"]],
        "preference_data": lora_setup["pairs"],
        "params": params,
        "seed": 4,
    }
    dense = merge(MergeSpec(out=tmp_path / "dense", **common))
    adapter = merge(MergeSpec(out=tmp_path / "adapter", output="adapter", **common))
    (mask_dir,) = (tmp_path / "cache" / "somf").iterdir()  # trained once, reused by the second merge
    vectors = load_task_vectors(
        "lora",
        base=lora_setup["base"],
        adapters=[lora_setup["math"], lora_setup["code"]],
        aligned_adapter=lora_setup["safe"],
    )
    applied = apply_trained_mask(mask_dir, vectors, tmp_path / "applied", mode="sample", seed=4)
    merged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(lora_setup["base"]), adapter
    ).merge_and_unload()
    with CheckpointReader(dense) as got, CheckpointReader(applied) as want:
        assert sorted(got.names()) == sorted(want.names())
        for name in want.names():
            torch.testing.assert_close(got.get(name), want.get(name), atol=0, rtol=0)
        for name, param in merged.named_parameters():
            torch.testing.assert_close(got.get(name).float(), param.detach(), atol=1e-6, rtol=0)
