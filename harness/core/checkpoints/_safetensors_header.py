"""Up-front validation of a safetensors file's header, so a truncated or corrupt file fails on open.

A safetensors file is ``u64 header length (little endian) | JSON header | byte buffer``; each tensor
entry names its dtype, shape and ``[start, end)`` offsets into the buffer. We check the header length
against the file size, parse the JSON, and check every tensor's offsets against the buffer size and
against ``numel * itemsize``, naming the file and tensor in the error.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.core.errors import CheckpointError

# safetensors dtype tags -> torch dtypes (those torch has; others are reported on access).
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
}
# Bits per element, for the size check (covers the sub-byte tags safetensors also knows).
_DTYPE_BITS: dict[str, int] = {
    "F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8,
    "U8": 8, "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "U16": 16, "U32": 32, "U64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "C64": 64,
}  # fmt: skip
_MAX_HEADER = 100 * 1024 * 1024  # the limit safetensors itself enforces


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, read from a safetensors header."""

    file: Path
    dtype_tag: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Validate ``path`` and return ``({tensor name: TensorInfo}, __metadata__)``."""
    try:
        file_size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(
                    f"{path}: not a safetensors file (only {file_size} bytes; expected an 8-byte header length)"
                )
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > _MAX_HEADER or 8 + header_len > file_size:
                raise CheckpointError(
                    f"{path}: truncated or corrupt safetensors file: header claims {header_len} bytes "
                    f"but the file has only {file_size} bytes"
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header (invalid JSON: {exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (expected a JSON object)")

    buffer_size = file_size - 8 - header_len
    metadata = header.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    max_end = 0
    for name, entry in header.items():
        try:
            tag, shape, (start, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: corrupt header entry for tensor '{name}': {entry!r}") from exc
        bits = _DTYPE_BITS.get(tag)
        if bits is None:
            raise CheckpointError(f"{path}: tensor '{name}' has unknown dtype '{tag}'")
        expected = math.ceil(math.prod(shape) * bits / 8)
        if end - start != expected or start < 0:
            raise CheckpointError(
                f"{path}: tensor '{name}' ({tag}, shape {list(shape)}) should take {expected} bytes "
                f"but its data offsets [{start}, {end}) span {end - start}"
            )
        if end > buffer_size:
            raise CheckpointError(
                f"{path}: truncated safetensors file: tensor '{name}' ends at byte {end} of the data "
                f"buffer but the file holds only {buffer_size} data bytes"
            )
        max_end = max(max_end, end)
        tensors[name] = TensorInfo(path, tag, shape, start, end)
    if max_end != buffer_size:
        raise CheckpointError(
            f"{path}: corrupt safetensors file: tensors end at data byte {max_end} "
            f"but the file holds {buffer_size} data bytes"
        )
    return tensors, {str(k): str(v) for k, v in metadata.items()}
