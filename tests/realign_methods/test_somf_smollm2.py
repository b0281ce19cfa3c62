"""SOMF on the bundled SmolLM2-135M-Instruct with a real LoRA task vector and real PKU-SafeRLHF pairs.

The task vector is made here: a few PEFT LoRA steps on GSM8K training examples, starting from a
saved initial adapter, which plays the aligned adapter (A₀, B₀ = 0) of the paper's PEFT setting.
Slow on 2 shared CPU cores (a few minutes), hence ``slow``; the fast twin is in test_somf.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from realign_methods.somf import apply_trained_mask, load_task_vectors, make_config, train_mask

pytestmark = pytest.mark.slow


def _gsm8k_lora(model_dir: Path, data_dir: Path, out: Path, *, steps: int = 3, examples: int = 4) -> tuple[Path, Path]:
    """(initial adapter, trained adapter) after ``steps`` LoRA steps on ``examples`` GSM8K problems."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").read_text().splitlines()[:examples]]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    )
    peft_model.save_pretrained(str(out / "init"))
    texts = []
    for row in rows:
        messages = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
        texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    batch = tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=128)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    losses = []
    for _ in range(steps):
        loss = peft_model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]  # the task vector really learned something
    peft_model.save_pretrained(str(out / "gsm8k"))
    return out / "init", out / "gsm8k"


def test_somf_on_smollm2_lowers_dpo_loss_on_real_pairs(smollm2_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    init, trained = _gsm8k_lora(smollm2_dir, data_dir, tmp_path)
    vectors = load_task_vectors("lora", base=smollm2_dir, adapters=[trained], aligned_adapter=init)
    config = make_config(
        fusion="weight_average",
        steps=4,
        lr=0.05,
        batch_size=8,
        micro_batch_size=4,
        max_length=128,
        max_prompt_length=64,
        max_pairs=64,
        val_fraction=0.25,
        eval_train_pairs=8,
        seed=0,
    )
    out = train_mask(
        vectors,
        config,
        tmp_path / "mask",
        preference_file=data_dir / "pku_saferlhf_realign_somf" / "pku_seferlhf_realign_dpo_5k.json",
    )
    summary = json.loads((out / "somf.json").read_text())
    print(
        f"\nSmolLM2 SOMF: train DPO loss {summary['train_loss_initial']:.5f} -> {summary['train_loss_final']:.5f}; "
        f"validation preference accuracy {summary['validation_preference_accuracy']:.3f} "
        f"(reward accuracy {summary['validation_reward_accuracy']:.3f}) on {summary['data']['validation_pairs']} pairs; "
        f"{summary['train_seconds']:.0f} s"
    )
    assert summary["data"]["train_pairs"] + summary["data"]["validation_pairs"] <= 64 + 33
    assert math.isclose(summary["train_loss_initial"], math.log(2), abs_tol=1e-4)
    assert summary["train_loss_final"] < summary["train_loss_initial"]
    assert summary["validation_preference_accuracy"] is not None
    model = apply_trained_mask(out, vectors, tmp_path / "realigned", mode="sample", seed=0)
    assert json.loads((model / "realign_merge.json").read_text())["somf_mask_mode"] == "sample"
