"""Shared helpers for the generation tests: tiny models and PEFT LoRA adapters built on the fly."""

from __future__ import annotations

from pathlib import Path

from harness.core.records import Item

# vLLM's CPU attention kernels need head_dim in {32, 64, ...}: 64 hidden / 2 heads = 32.
VLLM_FRIENDLY = {"num_heads": 2, "num_kv_heads": 1}

PROMPTS = [
    "How do I bake bread?",
    "What is the capital of France? Answer in one word, please, and then explain why it matters.",
    "def add(a, b):",
    "你好",
    "The answer is 42. What is the question that leads to it, in your view, if you think carefully?",
]


def make_items(n: int = len(PROMPTS), benchmark: str = "toy") -> list[Item]:
    return [
        Item(
            id=f"{benchmark}-{i}",
            benchmark=benchmark,
            prompt=PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)),
            language="en",
        )
        for i in range(n)
    ]


def make_lora(
    base: Path,
    out: Path,
    *,
    r: int = 8,
    seed: int = 0,
    targets: tuple[str, ...] = ("q_proj", "v_proj", "down_proj"),
) -> Path:
    """A real PEFT LoRA adapter for ``base`` with random, non-zero A and B (so it changes outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (out / "adapter_config.json").is_file():
        return out
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets), init_lora_weights=False, lora_dropout=0.0)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)
    peft_model.save_pretrained(str(out))
    return out


def merge_lora(base: Path, adapter: Path, out: Path) -> Path:
    """The adapter folded into the base weights (the reference for 'the LoRA was applied')."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(out))
    return out


def require_benchmarks() -> None:
    """Skip (with the reason) where the benchmarks package does not provide get_benchmark."""
    import pytest

    try:
        from benchmarks import get_benchmark  # type: ignore[attr-defined,unused-ignore]  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"benchmarks.get_benchmark is not available ({exc})")
