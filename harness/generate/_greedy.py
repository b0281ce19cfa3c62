"""Batched greedy decoding for the hf backend, cheaper than ``model.generate`` on the same batch.

Three savings, each exact up to float rounding (the same tokens as one prompt decoded alone):
- the prompts' shared token prefix (a chat template's system turn) is run once and its KV copied;
- prompts are prefilled in length-sorted chunks (little padding), then decoded as one batch;
- a row that has finished (end of turn, or a stop string) leaves the batch at once.

Padding sits between the shared prefix and each prompt's own tokens; the attention mask hides it and
position ids count real tokens only, so every row sees exactly its own prompt.

A decode step's attention (one query per row) runs as two batched matmuls over the KV heads
(:func:`decode_attention`): with a padding mask, sdpa would first copy every cached K/V once per query
head (grouped-query models) and its CPU flash kernel is slow at one query. Measured on SmolLM2-135M,
one core, 60 rows × 170 positions: attention and its copies were over half of a 650 ms step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

# Each KV layer as (keys, values), both [batch, kv_heads, length, head_dim].
_KV = list[tuple[torch.Tensor, torch.Tensor]]


DECODE_ATTENTION = "harness_decode"


def decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """sdpa, except a one-query step of plain attention: softmax(q·Kᵀ·scale + mask)·V per KV-head group,
    with no K/V copies. Shapes as sdpa's: query [b, heads, q, d], key/value [b, kv_heads, k, d]."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = dropout == 0.0 and getattr(module, "sinks", None) is None and not kwargs.get("position_bias")
    if query.shape[2] != 1 or not plain or kwargs.get("softcap"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    grouped = query.reshape(batch, kv_heads, heads // kv_heads, dim)  # head h reads KV head h // group
    scores = grouped @ key.transpose(-1, -2) * (dim**-0.5 if scaling is None else scaling)
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, : key.shape[2]]  # [b, 1, 1, k]: one query row
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    probs = torch.softmax(scores.float(), dim=-1).to(value.dtype)
    out = (probs @ value).reshape(batch, heads, 1, dim)
    return out.transpose(1, 2).contiguous(), None


def register_decode_attention() -> None:
    """Make :func:`decode_attention` selectable as ``attn_implementation="harness_decode"`` (sdpa's masks)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(DECODE_ATTENTION, decode_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(DECODE_ATTENTION, sdpa_mask)


def supports_greedy_loop(model: Any) -> bool:
    """True for models whose cache is one plain growing KV per layer (Llama, Qwen2, Mistral without
    a sliding window, ...); anything else (sliding-window or hybrid caches) goes through ``generate``."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # a config the cache cannot read: use generate
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every prompt shares, leaving each prompt at least one own token."""
    if not prompts:
        return 0
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    length = 0
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def _layers(cache: Any) -> _KV:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _cache(kv: _KV) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


def _reserved_cache(kv: _KV, room: int) -> Any:
    """A cache over ``kv`` with ``room`` more positions allocated up front: a decode step writes in
    place instead of concatenating (a full copy of the cache per layer per step)."""
    from transformers.cache_utils import Cache, DynamicLayer

    class ReservedLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
            super().__init__()
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            batch, heads, length, dim = keys.shape
            self._keys = keys.new_empty(batch, heads, length + room, dim)
            self._values = values.new_empty(batch, values.shape[1], length + room, values.shape[3])
            self._keys[:, :, :length], self._values[:, :, :length] = keys, values
            self._length = length
            self._expose()

        def _expose(self) -> None:
            self.keys, self.values = self._keys[:, :, : self._length], self._values[:, :, : self._length]

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            end = self._length + key_states.shape[-2]
            if end > self._keys.shape[2]:
                raise RuntimeError(f"decode cache full: {end} positions, {self._keys.shape[2]} reserved")
            self._keys[:, :, self._length : end] = key_states
            self._values[:, :, self._length : end] = value_states
            self._length = end
            self._expose()
            return self._keys[:, :, :end], self._values[:, :, :end]

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._expose()

    return Cache(layers=[ReservedLayer(keys, values) for keys, values in kv])


def _left_pad_gap(kv: _KV, mask: torch.Tensor, at: int, width: int) -> tuple[_KV, torch.Tensor]:
    """Insert ``width`` masked positions at sequence index ``at`` (after the shared prefix)."""
    if width == 0:
        return kv, mask
    padded = []
    for keys, values in kv:
        gap = keys.new_zeros(keys.shape[0], keys.shape[1], width, keys.shape[3])
        padded.append(
            (
                torch.cat([keys[:, :, :at], gap, keys[:, :, at:]], dim=2),
                torch.cat([values[:, :, :at], gap, values[:, :, at:]], dim=2),
            )
        )
    gap_mask = mask.new_zeros(mask.shape[0], width)
    return padded, torch.cat([mask[:, :at], gap_mask, mask[:, at:]], dim=1)


@torch.inference_mode()
def greedy_decode(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_ids: set[int],
    pad_id: int,
    prefill_batch: int = 16,
    stopped: Callable[[int, list[int]], bool] | None = None,
) -> list[list[int]]:
    """Greedy continuation of every prompt (token ids), decoded as one batch: each prompt's new tokens,
    through its end-of-turn token when it produced one.

    ``stopped(index, tokens)``, when given, is asked after every step for each live row (a stop
    string check); True ends that row like an end-of-turn token.
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = next(model.parameters()).device
    shared = common_prefix_length(prompts)
    prefix_kv: _KV = []
    if shared:
        prefix = torch.tensor([list(prompts[0][:shared])], device=device)
        prefix_cache = _cache([])
        model(input_ids=prefix, past_key_values=prefix_cache, use_cache=True, logits_to_keep=1)
        prefix_kv = _layers(prefix_cache)

    # Prefill: longest first, so each chunk pads only to its own longest prompt.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    chunks: list[tuple[list[int], _KV, torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for start in range(0, len(order), max(prefill_batch, 1)):
        rows = order[start : start + prefill_batch]
        own = [list(prompts[i][shared:]) for i in rows]
        width = max(len(t) for t in own)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
        own_mask = torch.zeros_like(ids)
        for r, own_ids in enumerate(own):
            ids[r, width - len(own_ids) :] = torch.tensor(own_ids, device=device)
            own_mask[r, width - len(own_ids) :] = 1
        positions = (shared + own_mask.cumsum(-1) - 1).clamp(min=0)
        mask = torch.cat([own_mask.new_ones(len(rows), shared), own_mask], dim=1)
        cache = _cache([(k.expand(len(rows), -1, -1, -1), v.expand(len(rows), -1, -1, -1)) for k, v in prefix_kv])
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        chunks.append((rows, _layers(cache), mask, out.logits[:, -1].argmax(-1), positions[:, -1]))

    # One decode batch: pad every chunk's KV to the longest chunk, then stack.
    length = max(chunk_mask.shape[1] for _, _, chunk_mask, _, _ in chunks)
    alive_rows: list[int] = []
    masks, next_ids, last_pos = [], [], []
    kv_parts: list[_KV] = []
    for rows, kv, chunk_mask, first, last in chunks:
        kv, chunk_mask = _left_pad_gap(kv, chunk_mask, shared, length - chunk_mask.shape[1])
        alive_rows += rows
        kv_parts.append(kv)
        masks.append(chunk_mask)
        next_ids.append(first)
        last_pos.append(last)
    kv_all = [
        (torch.cat([part[layer][0] for part in kv_parts]), torch.cat([part[layer][1] for part in kv_parts]))
        for layer in range(len(kv_parts[0]))
    ]
    cache = _reserved_cache(kv_all, max_new_tokens)
    mask = torch.cat(masks)
    tokens = torch.cat(next_ids)
    position = torch.cat(last_pos)
    alive = torch.tensor(alive_rows, device=device)
    results: list[list[int]] = [[] for _ in prompts]

    for step in range(max_new_tokens):
        finished = []
        for slot, (row, token) in enumerate(zip(alive.tolist(), tokens.tolist(), strict=True)):
            results[row].append(token)
            if token in eos_ids or (stopped is not None and stopped(row, results[row])):
                finished.append(slot)
        if step == max_new_tokens - 1:
            break
        if finished:
            gone = set(finished)
            keep = torch.tensor([s for s in range(len(alive)) if s not in gone], dtype=torch.long, device=device)
            if len(keep) == 0:
                break
            cache.batch_select_indices(keep)
            mask, tokens, position, alive = mask[keep], tokens[keep], position[keep], alive[keep]
        mask = torch.cat([mask, mask.new_ones(len(alive), 1)], dim=1)
        position = position + 1
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        tokens = out.logits[:, -1].argmax(-1)
    return results
