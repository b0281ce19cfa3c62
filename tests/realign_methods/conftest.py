"""Tiny Llama families for merge tests: aligned A, unaligned U, fine-tunes F1/F2, a base B, a LoRA adapter."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from harness.testing import make_finetune, make_tiny_llama

    root = tmp_path_factory.mktemp("family")
    base = make_tiny_llama(root / "base", seed=0)
    aligned = make_finetune(base, root / "aligned", seed=1, scale=0.02)
    unaligned = make_finetune(aligned, root / "unaligned", seed=2, scale=0.02)
    ft1 = make_finetune(aligned, root / "ft1", seed=3, scale=0.02)
    ft2 = make_finetune(aligned, root / "ft2", seed=4, scale=0.02)
    torch.manual_seed(5)
    model = AutoModelForCausalLM.from_pretrained(aligned)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    adapter = root / "adapter"
    peft_model.save_pretrained(adapter)
    other = make_tiny_llama(root / "other", seed=9, hidden_size=32, intermediate_size=64)
    return {
        "base": base,
        "aligned": aligned,
        "unaligned": unaligned,
        "ft1": ft1,
        "ft2": ft2,
        "adapter": adapter,
        "other": other,
        "root": root,
    }
