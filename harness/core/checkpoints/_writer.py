"""Streaming, atomic writing of sharded safetensors model directories."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from safetensors.torch import save_file

from harness.core.checkpoints._atomic import make_temp_dir, move_into_place
from harness.core.checkpoints._reader import SAFETENSORS_INDEX, SAFETENSORS_SINGLE, is_weight_file
from harness.core.checkpoints._stream import ShardPlan, write_at
from harness.core.errors import CheckpointError

PROVENANCE_FILE = "realign_merge.json"
# Provenance of how a directory was made; never carried over to a directory made from it.
_OWN_PROVENANCE = {PROVENANCE_FILE, "realign_import.json"}
DEFAULT_MAX_SHARD_SIZE = 2 * 1024**3


def copy_aux_files(source: Path, dest: Path) -> list[str]:
    """Copy everything in ``source`` that is not a weight file/index (config, tokenizer, chat template, ...).

    Top-level files only; the source's own provenance files are not carried over. Returns the copied names.
    """
    if not source.is_dir():
        raise CheckpointError(f"copy_aux_from: not a model directory: {source}")
    copied = []
    for item in sorted(source.iterdir()):
        name = item.name
        if item.is_file() and not is_weight_file(name) and name not in _OWN_PROVENANCE and not name.startswith("."):
            shutil.copy2(item, dest / name)
            copied.append(name)
    return copied


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """A positive byte count from an int or a string such as ``1000``, ``500MB`` or ``2GiB``."""
    if isinstance(size, str):
        cleaned = size.strip().upper().replace(" ", "")
        number = cleaned.rstrip("KMGIB")
        unit = cleaned[len(number) :]
        try:
            value = int(float(number) * _SIZE_UNITS[unit])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"size {size!r}: expected bytes or a size such as 500MB or 2GiB") from exc
    else:
        value = int(size)
    if value <= 0:
        raise CheckpointError(f"size {size!r}: must be positive")
    return value


def _metadata_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def canonicalize_header(path: Path) -> bool:
    """Rewrite a safetensors file's ``__metadata__`` with sorted keys, in place and at the same length.

    safetensors serialises metadata from a hash map, so two identical writes would otherwise differ
    in header byte order; sorting makes equal checkpoints bit-identical. Returns False (file
    untouched) if the canonical header would not have exactly the same length.
    """
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        raw = handle.read(size)
        header = json.loads(raw)
        if "__metadata__" not in header:
            return True
        ordered = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) != len(raw.rstrip(b" ")):
            return False
        handle.seek(8)
        handle.write(text + b" " * (size - len(text)))
    return True


class CheckpointWriter:
    """Write a Hugging Face model directory tensor by tensor, holding at most about one shard in memory.

    Tensors go into ``.<name>.tmp-<pid>-<random>`` next to ``out_dir``; ``commit()`` names the shards
    ``model-0000k-of-0000n.safetensors`` (or ``model.safetensors`` when there is one), writes
    ``model.safetensors.index.json`` when sharded and ``realign_merge.json`` when ``metadata`` is given,
    then renames the temp dir to ``out_dir``. Shard headers carry their metadata in sorted order, so
    equal inputs give bit-identical files. ``abort()`` (or an exception inside ``with``) removes
    the temp dir, so no half-written output is ever left.

    ``layout``: every tensor's ``(name, shape, dtype)``, in write order, known before the first
    ``add``. The shards and their headers are then planned up front and each tensor is written to
    its offset as it is added, so no shard is ever held in memory (a merge's writer holds nothing);
    ``add`` refuses a tensor the layout does not list, with another shape or dtype, and ``commit``
    one the layout lists that was never added.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
        metadata: dict[str, Any] | None = None,
        copy_aux_from: str | Path | None = None,
        overwrite: bool = False,
        layout: Sequence[tuple[str, Sequence[int], torch.dtype]] | None = None,
    ) -> None:
        max_shard_size = parse_size(max_shard_size)
        self.out_dir = Path(out_dir).absolute()
        self.overwrite = overwrite
        self.max_shard_size = int(max_shard_size)
        self.metadata = dict(metadata) if metadata is not None else None
        self._st_metadata = {"format": "pt"} | {str(k): _metadata_value(v) for k, v in (metadata or {}).items()}
        self.copy_aux_from = Path(copy_aux_from) if copy_aux_from is not None else None
        if self.copy_aux_from is not None and not self.copy_aux_from.is_dir():
            raise CheckpointError(f"copy_aux_from: not a model directory: {self.copy_aux_from}")
        self._refuse_existing()
        self.tmp_dir = make_temp_dir(self.out_dir)
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffer_bytes = 0
        self._buffer_ptrs: set[int] = set()
        self._shards: list[tuple[str, list[str]]] = []  # (temp file name, tensor names)
        self._names: set[str] = set()
        self.total_size = 0
        self._state = "open"
        self._plan: ShardPlan | None = None
        self._fds: list[int] = []
        if layout is not None:
            self._open_planned_shards(layout)

    def _open_planned_shards(self, layout: Sequence[tuple[str, Sequence[int], torch.dtype]]) -> None:
        try:
            self._plan = ShardPlan.build(layout, self.max_shard_size, self._st_metadata)
            for number, (header, names) in enumerate(zip(self._plan.headers, self._plan.names, strict=True)):
                file_name = f"shard-{number + 1:05d}.safetensors"
                fd = os.open(self.tmp_dir / file_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                self._fds.append(fd)
                os.pwrite(fd, header, 0)
                self._shards.append((file_name, names))
        except BaseException:
            self.abort()
            raise

    def _refuse_existing(self) -> None:
        if self.out_dir.exists() and not self.overwrite:
            raise CheckpointError(
                f"output directory already exists: {self.out_dir} (pass overwrite=True / --overwrite)"
            )

    # -- writing -----------------------------------------------------------------------------------
    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue one tensor; a shard is flushed to disk once ``max_shard_size`` would be exceeded."""
        if self._state != "open":
            raise CheckpointError(f"CheckpointWriter for {self.out_dir} is already {self._state}")
        if name in self._names:
            raise CheckpointError(f"tensor '{name}' added twice to {self.out_dir}")
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"tensor '{name}': expected a torch.Tensor, got {type(tensor).__name__}")
        tensor = tensor.detach().to("cpu").contiguous()
        if tensor.numel() and tensor.untyped_storage().data_ptr() in self._buffer_ptrs:
            tensor = tensor.clone()  # tied weights: safetensors refuses shared storage within a file
        size = tensor.numel() * tensor.element_size()
        if self._plan is not None:
            self._write_planned(name, tensor)
            self._names.add(name)
            self.total_size += size
            return
        if self._buffer and self._buffer_bytes + size > self.max_shard_size:
            self._flush()
        self._buffer[name] = tensor
        if tensor.numel():
            self._buffer_ptrs.add(tensor.untyped_storage().data_ptr())
        self._buffer_bytes += size
        self._names.add(name)
        self.total_size += size

    def _write_planned(self, name: str, tensor: torch.Tensor) -> None:
        assert self._plan is not None
        slot = self._plan.slots.get(name)
        if slot is None:
            raise CheckpointError(f"tensor '{name}' is not in the layout planned for {self.out_dir}")
        if tuple(tensor.shape) != slot.shape or tensor.dtype != slot.dtype:
            raise CheckpointError(
                f"tensor '{name}': got {list(tensor.shape)} {tensor.dtype}, the layout planned for {self.out_dir} "
                f"has {list(slot.shape)} {slot.dtype}"
            )
        file_name = self._shards[slot.shard][0]
        write_at(self._fds[slot.shard], tensor, slot.offset, self.tmp_dir / file_name)

    def _close_files(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    def _flush(self) -> None:
        if not self._buffer:
            return
        file_name = f"shard-{len(self._shards) + 1:05d}.safetensors"
        try:
            save_file(self._buffer, str(self.tmp_dir / file_name), metadata=self._st_metadata)
        except Exception as exc:
            raise CheckpointError(f"cannot write shard {self.tmp_dir / file_name}: {exc}") from exc
        canonicalize_header(self.tmp_dir / file_name)
        self._shards.append((file_name, list(self._buffer)))
        self._buffer = {}
        self._buffer_ptrs = set()
        self._buffer_bytes = 0

    @property
    def num_tensors(self) -> int:
        return len(self._names)

    def commit(self) -> Path:
        """Finish the shards, write index/provenance/aux files, and atomically rename into ``out_dir``."""
        if self._state != "open":
            raise CheckpointError(f"CheckpointWriter for {self.out_dir} is already {self._state}")
        try:
            if not self._names:
                raise CheckpointError(f"no tensors were added; refusing to write an empty checkpoint to {self.out_dir}")
            if self._plan is not None:
                missing = [n for names in self._plan.names for n in names if n not in self._names]
                if missing:
                    raise CheckpointError(
                        f"tensor '{missing[0]}' is in the layout planned for {self.out_dir} but was never added"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                    )
                self._close_files()
            self._flush()
            self._name_shards()
            if self.copy_aux_from is not None:
                copy_aux_files(self.copy_aux_from, self.tmp_dir)
            if self.metadata is not None:
                provenance = json.dumps(self.metadata, indent=2, sort_keys=True, default=str) + "\n"
                (self.tmp_dir / PROVENANCE_FILE).write_text(provenance)
            self._refuse_existing()
            move_into_place(self.tmp_dir, self.out_dir)
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        return self.out_dir

    def _name_shards(self) -> None:
        count = len(self._shards)
        if count == 1:
            (self.tmp_dir / self._shards[0][0]).rename(self.tmp_dir / SAFETENSORS_SINGLE)
            return
        weight_map: dict[str, str] = {}
        for number, (temp_name, names) in enumerate(self._shards, start=1):
            final = f"model-{number:05d}-of-{count:05d}.safetensors"
            (self.tmp_dir / temp_name).rename(self.tmp_dir / final)
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (self.tmp_dir / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")

    def abort(self) -> None:
        """Drop everything written so far (idempotent)."""
        if self._state == "committed":
            return
        self._buffer = {}
        self._buffer_ptrs = set()
        self._close_files()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self._state = "aborted"

    def __del__(self) -> None:
        # A writer dropped without commit/abort must not leave its temp dir behind.
        if getattr(self, "_state", None) == "open":
            with contextlib.suppress(Exception):
                self.abort()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            if self._state == "open":
                self.commit()
        else:
            self.abort()

    def __repr__(self) -> str:
        return f"CheckpointWriter({str(self.out_dir)!r}, tensors={self.num_tensors}, state={self._state})"
