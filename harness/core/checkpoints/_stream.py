"""Safetensors shards laid out before any tensor exists, so each tensor is written to disk as it arrives.

A safetensors file is ``u64 header length | JSON header | data``, and the header holds every tensor's
byte offsets, which is why ``save_file`` needs the whole shard in memory. When the names, shapes and
dtypes of all outputs are known up front (a merge knows them from its reference input), the headers
can be written first and each tensor ``pwrite``-n to its offset: the writer then holds no shard, only
the tensor being written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.core.errors import CheckpointError

_ST_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}


@dataclass(frozen=True)
class TensorSlot:
    """Where one planned tensor goes: its shard (index into the plan) and absolute byte offset."""

    shard: int
    offset: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int


@dataclass
class ShardPlan:
    """Shard files, their headers and every tensor's slot, from ``(name, shape, dtype)`` in write order."""

    headers: list[bytes] = field(default_factory=list)
    names: list[list[str]] = field(default_factory=list)
    slots: dict[str, TensorSlot] = field(default_factory=dict)

    @classmethod
    def build(
        cls, layout: Sequence[tuple[str, Sequence[int], torch.dtype]], max_shard_size: int, metadata: dict[str, str]
    ) -> ShardPlan:
        plan = cls()
        groups: list[list[tuple[str, tuple[int, ...], torch.dtype, int]]] = [[]]
        group_bytes = 0
        seen: set[str] = set()
        for name, shape, dtype in layout:
            if name in seen:
                raise CheckpointError(f"tensor '{name}' appears twice in the checkpoint layout")
            if dtype not in _ST_DTYPES:
                raise CheckpointError(f"tensor '{name}': dtype {dtype} cannot be stored in safetensors")
            seen.add(name)
            numel = 1
            for size in shape:
                numel *= int(size)
            nbytes = numel * dtype.itemsize
            if groups[-1] and group_bytes + nbytes > max_shard_size:  # same rule as the buffered writer
                groups.append([])
                group_bytes = 0
            groups[-1].append((name, tuple(int(s) for s in shape), dtype, nbytes))
            group_bytes += nbytes
        for number, group in enumerate(groups):
            entries: dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
            start = 0
            for name, shape, dtype, nbytes in group:
                entries[name] = {
                    "dtype": _ST_DTYPES[dtype],
                    "shape": list(shape),
                    "data_offsets": [start, start + nbytes],
                }
                start += nbytes
            text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
            text += b" " * (-len(text) % 8)  # data starts 8-byte aligned, as safetensors writes it
            header = len(text).to_bytes(8, "little") + text
            plan.headers.append(header)
            plan.names.append([name for name, *_ in group])
            position = len(header)
            for name, shape, dtype, nbytes in group:
                plan.slots[name] = TensorSlot(number, position, shape, dtype, nbytes)
                position += nbytes
        return plan


def write_at(fd: int, tensor: torch.Tensor, offset: int, where: Path) -> None:
    """Write ``tensor``'s bytes (contiguous, CPU, little-endian) at ``offset`` of open file ``fd``."""
    if tensor.numel() == 0:
        return
    view = tensor.reshape(-1).view(torch.uint8).numpy().data
    written = 0
    try:
        while written < len(view):
            written += os.pwrite(fd, view[written:], offset + written)
    except OSError as exc:
        raise CheckpointError(f"cannot write shard {where}: {exc}") from exc
