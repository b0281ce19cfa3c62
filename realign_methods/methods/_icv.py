"""In-context safety vectors (ICV, Liu et al. 2023, as Safety Arithmetic uses them): activations,
the steering direction, and the two ways to apply it (forward hooks, or a folded MLP bias).

Kept as plain functions with explicit inputs so a shared calibration stage can call
:func:`last_token_states` instead of the method doing its own forward pass.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

_DOWN_PROJ = re.compile(r"^model\.layers\.(\d+)\.mlp\.down_proj\.weight$")


def exemplar_text(tokenizer: Any, prompt: str, response: str) -> str:
    """``prompt`` + ``response`` as one chat exchange (plain ``prompt\\nresponse`` without a template)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return str(tokenizer.apply_chat_template(messages, tokenize=False))
    return f"{prompt}\n{response}"


@torch.no_grad()
def last_token_states(
    model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int = 16
) -> torch.Tensor:
    """Each decoder layer's output hidden state at the last token: ``[len(texts), layers, hidden]`` (fp32).

    A text longer than ``max_length`` tokens keeps its *last* ``max_length`` (the answer, whose end is
    the state read). Batches are right-padded with an attention mask: under causal attention the
    real positions do not see the padding, so each state is the unpadded sequence's.
    """
    encoded = [list(tokenizer(text, add_special_tokens=False)["input_ids"][-max_length:]) for text in texts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        width = max(len(ids) for ids in batch)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in batch])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch])
        out = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        last = torch.tensor([len(ids) - 1 for ids in batch])
        for index in range(len(batch)):
            rows.append(torch.stack([h[index, last[index]].float() for h in out.hidden_states[1:]]))
    return torch.stack(rows)


def icv_direction(safe: torch.Tensor, unsafe: torch.Tensor) -> torch.Tensor:
    """ICV from paired states ``[n, layers, hidden]``: D = safe − unsafe flattened over layers;
    v = mean(D) + first principal direction of the centred D (sign: along mean(D)); ``[layers, hidden]``."""
    diffs = (safe - unsafe).double().reshape(safe.shape[0], -1)
    mean = diffs.mean(dim=0)
    centred = diffs - mean
    if diffs.shape[0] < 2 or not centred.abs().max() > 0:
        component = torch.zeros_like(mean)
    else:
        component = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        if float(component @ mean) < 0:
            component = -component
    return (mean + component).reshape(safe.shape[1:]).float()


def steering_hooks(model: Any, vectors: torch.Tensor) -> list[Any]:
    """Add ``vectors[l]`` to the MLP output of decoder layer ``l`` (forward hooks; returns the handles)."""
    handles = []
    for index, layer in enumerate(model.model.layers):
        vector = vectors[index]

        def add(module: Any, args: Any, output: torch.Tensor, vector: torch.Tensor = vector) -> torch.Tensor:
            return output + vector.to(output.dtype)

        handles.append(layer.mlp.register_forward_hook(add))
    return handles


def mlp_layers(names: Sequence[str]) -> dict[int, str]:
    """``{layer index: down_proj weight name}`` of a Llama-style checkpoint."""
    return {int(m.group(1)): name for name in names if (m := _DOWN_PROJ.match(name))}


def folded_biases(vectors: torch.Tensor, shapes: dict[str, torch.Size], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """MLP biases that add ``vectors[l]`` after layer ``l``'s MLP: ``down_proj.bias = v_l``, and zeros
    for ``gate_proj``/``up_proj`` (transformers creates all three when ``mlp_bias`` is true).

    ``shapes`` maps each weight name to its shape (for the intermediate size).
    """
    out: dict[str, torch.Tensor] = {}
    for layer, down in sorted(mlp_layers(list(shapes)).items()):
        prefix = down.removesuffix("down_proj.weight")
        intermediate = shapes[down][1]
        out[f"{prefix}down_proj.bias"] = vectors[layer].to(dtype)
        out[f"{prefix}gate_proj.bias"] = torch.zeros(intermediate, dtype=dtype)
        out[f"{prefix}up_proj.bias"] = torch.zeros(intermediate, dtype=dtype)
    return out
