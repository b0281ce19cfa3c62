"""Tiny synthetic checkpoints for tests, benchmarks and examples (the mergekit habit).

``make_tiny_llama`` writes a real Hugging Face Llama directory (safetensors, config, tokenizer with a
chat template) small enough to build in well under a second. ``make_finetune`` derives a
"fine-tuned" sibling by adding seeded noise, so task vectors are non-trivial.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_TOKENIZER_CORPUS = [
    "How do I bake bread? Mix flour, water, yeast and salt, knead, let it rise, then bake.",
    "I cannot help with that request. It could cause harm.",
    "The answer is 42. #### 42",
    "def add(a, b):\n    return a + b\n",
    "What is the capital of France? Paris.",
    "你好，我不能帮助你做这件事。",
]


def build_tokenizer(vocab_size: int = 384):  # -> PreTrainedTokenizerFast
    """A byte-level BPE tokenizer trained in-process on a few sentences (no hub access)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TOKENIZER_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_tiny_llama(
    path: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    max_shard_size: str | int = "5GB",
    tie_word_embeddings: bool = False,
    with_tokenizer: bool = True,
) -> Path:
    """Write a randomly initialised Llama model directory and return its path."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = build_tokenizer() if with_tokenizer else None
    vocab = vocab_size or (len(tokenizer) if tokenizer is not None else 384)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    torch.nn.Module.to(model, dtype)  # in place; transformers wraps .to in a decorator mypy cannot follow
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(path, max_shard_size=max_shard_size)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def make_finetune(
    base: str | Path,
    out: str | Path,
    *,
    seed: int,
    scale: float = 0.02,
    skip: tuple[str, ...] = (),
) -> Path:
    """Copy ``base`` to ``out`` with seeded Gaussian noise (std ``scale``) added to every tensor.

    Tensors whose name contains any string in ``skip`` are copied unchanged.
    """
    base, out = Path(base), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed)
    for item in base.iterdir():
        if item.suffix == ".safetensors":
            tensors = load_file(item)
            for name, tensor in tensors.items():
                if any(s in name for s in skip):
                    continue
                noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32) * scale
                tensors[name] = (tensor.float() + noise).to(tensor.dtype)
            save_file(tensors, out / item.name, metadata={"format": "pt"})
        elif item.is_file():
            (out / item.name).write_bytes(item.read_bytes())
    return out


def read_config(path: str | Path) -> dict:
    return json.loads((Path(path) / "config.json").read_text())


def make_lora_adapter(base: str | Path, out: str | Path, seed: int, **lora_kwargs: object) -> Path:
    """A real PEFT LoRA adapter on ``base`` with random (non-zero) A and B, saved to ``out``."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    get_peft_model(model, LoraConfig(init_lora_weights=False, **lora_kwargs)).save_pretrained(str(out))  # type: ignore[arg-type]
    return Path(out)


def continue_adapter(base: str | Path, start: str | Path, out: str | Path, seed: int) -> Path:
    """What continued LoRA training leaves (the organism's θ_F): ``start`` loaded trainable, every
    factor moved, saved to ``out`` — an adapter on the same base that still contains ``start``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    generator = torch.Generator().manual_seed(seed)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(start), is_trainable=True
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn(param.shape, generator=generator) * param.abs().mean() * 0.5)
    model.save_pretrained(str(out))
    return Path(out)
