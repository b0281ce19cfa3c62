"""The streaming merge engine: ``merge(spec) -> Path`` and ``plan(spec)`` (for ``--dry-run``).

Everything is validated before anything is written (paths, the method's inputs and parameters,
tensor names/shapes/dtypes across inputs, adapters against their base). The walk then reads one
tensor name from each input, computes it, and hands it to ``CheckpointWriter`` (sharded, temp dir
renamed on success), so no whole model is ever held in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.core.checkpoints import (
    CheckpointWriter,
    CombinedAdapter,
    LoraAdapter,
    is_adapter_dir,
    open_model,
    save_adapter,
)
from harness.core.checkpoints._finite import check_finite
from harness.core.checkpoints._writer import copy_aux_files
from harness.core.errors import CheckpointError, ConfigError
from realign_methods._kernels import torch_threads
from realign_methods._method import (
    DENSE_INPUTS,
    Method,
    MethodParams,
    PrepareContext,
    Role,
    TensorContext,
    TensorInputs,
)
from realign_methods._registry import METHODS, get_method
from realign_methods.calibration import Statistics, calibrate, resolve_data

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_VOCAB_TENSOR = re.compile(r"(embed_tokens|lm_head|wte|word_embeddings|embed_in|embed_out)")


def _package_version() -> str:
    try:
        return version("realign-bench")
    except PackageNotFoundError:
        return "unknown"


def _parse_size(value: int | str) -> int:
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", value, flags=re.IGNORECASE)
    if not match:
        raise ConfigError(f"max_shard_size: expected bytes or a size like '1GB' / '500MiB', got {value!r}")
    number, unit, binary = float(match.group(1)), match.group(2).upper(), bool(match.group(3))
    power = "KMGT".index(unit) + 1 if unit else 0
    return int(number * (1024 if binary else 1000) ** power)


NONFINITE_HINT = "refusing to merge it (pass allow_nonfinite=True / --allow-nonfinite to merge anyway)"


class MergeSpec(BaseModel):
    """One merge, fully described (its canonical JSON is its identity)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    aligned: Path | None = None
    unaligned: Path | None = None
    base: Path | None = None
    finetuned: list[Path] = Field(default_factory=list)
    adapters: list[Path] = Field(default_factory=list)
    #: what the ``adapters`` are relative to: "aligned", "base" or a model path (None: their configs say)
    adapter_base: str | None = None
    preference_data: Path | None = None
    calibration_data: Path | None = None
    out: Path
    seed: int = 0
    dtype: Literal["float32", "fp32", "bfloat16", "bf16", "float16", "fp16"] | None = None
    max_shard_size: int | str = "1GB"
    output: Literal["dense", "adapter"] = "dense"
    allow_pickle: bool = False
    allow_nonfinite: bool = False  # merge inputs/outputs holding NaN/±inf instead of refusing them
    overwrite: bool = False

    @field_validator("finetuned", "adapters", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Path) else value

    def given(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for role in (Role.ALIGNED, Role.UNALIGNED, Role.BASE, Role.PREFERENCE_DATA, Role.CALIBRATION_DATA):
            if getattr(self, role) is not None:
                counts[role] = 1
        for role in (Role.FINETUNED, Role.ADAPTERS):
            if getattr(self, role):
                counts[role] = len(getattr(self, role))
        return counts

    def input_paths(self) -> list[tuple[str, Path]]:
        """``(label, path)`` of every input, labels like ``aligned`` or ``finetuned[1]``."""
        out: list[tuple[str, Path]] = []
        for role in (Role.ALIGNED, Role.UNALIGNED, Role.BASE, Role.PREFERENCE_DATA, Role.CALIBRATION_DATA):
            value = getattr(self, role)
            if value is not None:
                out.append((role, value))
        for role in (Role.FINETUNED, Role.ADAPTERS):
            out.extend((f"{role}[{i}]", p) for i, p in enumerate(getattr(self, role)))
        return out


@dataclass
class _Prepared:
    spec: MergeSpec
    method: Method
    params: MethodParams
    readers: dict[str, list[Any]]
    adapters: list[Any]
    reference: str
    names: list[str]
    out_dtype: dict[str, torch.dtype] = field(default_factory=dict)
    adapter_notes: dict[str, str] = field(default_factory=dict)  # what each adapter was taken relative to
    calibration_data: Path | None = None  # resolved when the method declares a calibration
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def close(self) -> None:
        for readers in self.readers.values():
            for reader in readers:
                reader.close()

    def tensor_inputs(self, name: str) -> TensorInputs:
        loaders: dict[str, list[Callable[[], torch.Tensor]]] = {
            role: [_getter(reader, name, self.device) for reader in readers] for role, readers in self.readers.items()
        }
        return TensorInputs(name, loaders, self.adapters)


def _getter(reader: Any, name: str, device: torch.device) -> Callable[[], torch.Tensor]:
    if device.type == "cpu":
        return lambda: reader.get(name)
    return lambda: reader.get(name).to(device, non_blocking=True)


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device merges run on; ``cuda`` without a usable GPU is refused before any work."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r}: merges run on 'cpu' or 'cuda', not {resolved.type!r}")
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", built without CUDA")
            raise ConfigError(
                f"device {device!r}: CUDA is not available here ({build}, no GPU visible); use --device cpu"
            )
        index = resolved.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    return resolved


def _resolve_threads(threads: int | None) -> int:
    if threads is None:
        return os.cpu_count() or 1
    if threads < 1:
        raise ConfigError(f"threads must be ≥ 1, got {threads}")
    return threads


def _label(role: str, index: int, readers: dict[str, list[Any]]) -> str:
    return f"{role}[{index}]" if role in (Role.FINETUNED,) and len(readers[role]) > 1 else role


def _check_consistent(prepared: _Prepared) -> None:
    """Same tensor names, shapes and dtypes in every dense input (vocab mismatches named as such)."""
    ref_reader = prepared.readers[prepared.reference][0]
    ref_names = set(ref_reader.names())
    for role, readers in prepared.readers.items():
        for index, reader in enumerate(readers):
            if reader is ref_reader:
                continue
            label = _label(role, index, prepared.readers)
            names = set(reader.names())
            missing = sorted(ref_names - names)
            extra = sorted(names - ref_names)
            if missing or extra:
                what = f"lacks tensor '{missing[0]}'" if missing else f"has extra tensor '{extra[0]}'"
                more = len(missing) + len(extra) - 1
                raise CheckpointError(
                    f"{label} checkpoint {reader.path} {what} that {prepared.reference} checkpoint "
                    f"{ref_reader.path} {'has' if missing else 'lacks'}"
                    + (f" (and {more} more differences)" if more > 0 else "")
                )
            for name in prepared.names:
                ref_shape, shape = tuple(ref_reader.shape(name)), tuple(reader.shape(name))
                if ref_shape != shape:
                    if _VOCAB_TENSOR.search(name) and ref_shape[1:] == shape[1:]:
                        raise CheckpointError(
                            f"vocab size mismatch: tensor '{name}' has {shape[0]} rows in {label} checkpoint "
                            f"{reader.path} but {ref_shape[0]} in {prepared.reference} checkpoint {ref_reader.path} "
                            "(the models use different tokenizers/vocabularies)"
                        )
                    raise CheckpointError(
                        f"shape mismatch for tensor '{name}': {list(shape)} in {label} checkpoint {reader.path}, "
                        f"expected {list(ref_shape)} as in {prepared.reference} checkpoint {ref_reader.path}"
                    )
                ref_dtype, dtype = ref_reader.dtype(name), reader.dtype(name)
                if ref_dtype != dtype:
                    raise CheckpointError(
                        f"dtype mismatch for tensor '{name}': {dtype} in {label} checkpoint {reader.path}, "
                        f"expected {ref_dtype} as in {prepared.reference} checkpoint {ref_reader.path} "
                        "(convert the inputs to one dtype; the output dtype is set with dtype=)"
                    )


def _open(spec: MergeSpec) -> _Prepared:
    """Validate everything that can be validated without computing; returns open readers."""
    if spec.method not in METHODS:
        get_method(spec.method)  # raises with near-name suggestions
    method = get_method(spec.method)
    params = method.validate(spec.params)
    given = spec.given()
    model_folders = [
        label
        for label, p in spec.input_paths()
        if not label.startswith((Role.ADAPTERS, Role.BASE))
        and label.split("[")[0] in DENSE_INPUTS
        and is_adapter_dir(p)
    ]
    # A base the method does not read is still the base that adapter inputs are resolved onto.
    base_for_adapters_only = (
        spec.base is not None and Role.BASE not in method.info.accepted_inputs and bool(model_folders or spec.adapters)
    )
    if base_for_adapters_only:
        given.pop(Role.BASE)
    method.check_inputs(given)
    method.check_params_inputs(params, given)
    if spec.output == "adapter" and not method.supports_adapter_output:
        raise ConfigError(f"method {spec.method!r} cannot write a LoRA adapter (output='adapter'); use output='dense'")
    for label, path in spec.input_paths():
        if not Path(path).exists():
            raise CheckpointError(f"{label} not found: {path}")
    if spec.out.exists() and not spec.overwrite:
        raise CheckpointError(f"output directory already exists: {spec.out} (pass overwrite=True / --overwrite)")
    resolved_out = spec.out.resolve()
    for label, path in spec.input_paths():
        if Path(path).resolve() == resolved_out:
            raise ConfigError(f"out {spec.out} is the same path as input {label}")
    _parse_size(spec.max_shard_size)

    readers: dict[str, list[Any]] = {}
    adapters: list[Any] = []
    prepared: _Prepared | None = None
    try:
        for role in DENSE_INPUTS:
            if role == Role.BASE and base_for_adapters_only:
                continue
            paths = getattr(spec, role)
            paths = paths if isinstance(paths, list) else ([paths] if paths is not None else [])
            if paths:
                readers[role] = [
                    open_model(
                        p,
                        base=spec.base if role != Role.BASE else None,
                        allow_pickle=spec.allow_pickle,
                        label=f"{role}[{i}]" if role == Role.FINETUNED else role,
                        base_hint="--base BASE_DIR (base= in a MergeSpec)",
                    )
                    for i, p in enumerate(paths)
                ]
        adapters = [LoraAdapter.load(p, allow_pickle=spec.allow_pickle) for p in spec.adapters]
        if not spec.allow_nonfinite:  # every tensor a method reads is checked as it is read
            for group in readers.values():
                for reader in group:
                    reader.nonfinite_check = NONFINITE_HINT
            for adapter in adapters:
                adapter.reader.nonfinite_check = NONFINITE_HINT
                for key in adapter.reader.names():  # adapters are small: check every factor up front
                    adapter.reader.get(key)
        reference = method.reference_input({r: len(v) for r, v in readers.items()})
        names = list(readers[reference][0].names())
        prepared = _Prepared(spec, method, params, readers, adapters, reference, names)
        _check_consistent(prepared)
        prepared.calibration_data = _calibration_data(spec, method, readers)
        ref_reader = readers[reference][0]
        for adapter in adapters:
            adapter.check_base(ref_reader)
        prepared.params, prepared.adapters, prepared.adapter_notes = _adapter_updates(
            spec, method, params, adapters, readers, reference
        )
        target = _DTYPES[spec.dtype] if spec.dtype else None
        for name in names:
            stored = ref_reader.dtype(name)
            prepared.out_dtype[name] = target if (target is not None and stored.is_floating_point) else stored
        return prepared
    except BaseException:
        for group in readers.values():
            for reader in group:
                with contextlib.suppress(Exception):
                    reader.close()
        raise


def _calibration_data(spec: MergeSpec, method: Method, readers: dict[str, list[Any]]) -> Path | None:
    """The calibration file of a method that declares a calibration (checked before any work)."""
    calibration = method.info.calibration
    if calibration is None:
        return None
    if calibration.model not in readers:
        raise ConfigError(f"method {spec.method!r} calibrates its {calibration.model} input, which was not given")
    return resolve_data(calibration.data, spec.calibration_data)


def _run_calibration(prepared: _Prepared) -> Statistics | None:
    calibration = prepared.method.info.calibration
    if calibration is None or prepared.calibration_data is None:
        return None
    params = prepared.params
    return calibrate(
        prepared.readers[calibration.model][0],
        calibration,
        prepared.calibration_data,
        examples=getattr(params, "calibration_examples", None),
        max_length=getattr(params, "calibration_max_length", None),
        seed=prepared.spec.seed,
    )


def _adapter_updates(
    spec: MergeSpec,
    method: Method,
    params: MethodParams,
    adapters: list[Any],
    readers: dict[str, list[Any]],
    reference: str,
) -> tuple[MethodParams, list[Any], dict[str, str]]:
    """Each adapter as the update the method must add to its reference input (see ``_relative``).

    Methods with an ``aligned_adapter`` parameter (Safe LoRA, SOMF) take the adapter θ_F continued
    as that parameter and do the subtraction themselves: when it is set they get the adapters as
    given; when it is not and the adapters continue the aligned input's own adapter, it is filled in
    (as ``realign run`` does); any other correction is refused for them.
    """
    from realign_methods._relative import relative_adapters

    base = Path(spec.base) if spec.base is not None else None
    if "aligned_adapter" in type(params).model_fields and getattr(params, "aligned_adapter", None) is not None:
        return params, adapters, {}
    updates, notes = relative_adapters(adapters, spec.adapter_base, readers, reference, base, spec.aligned)
    combined = [(i, u) for i, u in enumerate(updates) if isinstance(u, CombinedAdapter)]
    if not combined:
        return params, updates, notes
    if "aligned_adapter" in type(params).model_fields:
        aligned = readers.get(Role.ALIGNED, [None])[0]
        own = getattr(aligned, "adapter", None)
        if own is not None and all(
            len(u.parts) == 2 and u.parts[1][1] < 0 and u.parts[1][0] is own for _, u in combined
        ):
            filled = method.validate({**spec.params, "aligned_adapter": str(own.path)})
            notes = {k: f"{v} (as parameter aligned_adapter={own.path})" for k, v in notes.items()}
            return filled, adapters, notes
        label = f"adapters[{combined[0][0]}]"
        raise ConfigError(
            f"method {spec.method!r}: {label} is {notes[label]}; this method takes that correction only as "
            "parameter aligned_adapter (-p aligned_adapter=ADAPTER_OF_THETA_A)"
        )
    if spec.output == "adapter":
        label = f"adapters[{combined[0][0]}]"
        raise ConfigError(
            f"output='adapter': {label} is {notes[label]}, which is not one PEFT adapter; "
            "write dense output (--output dense)"
        )
    return params, updates, notes


def _provenance(prepared: _Prepared) -> dict[str, Any]:
    spec = prepared.spec
    hashes: dict[str, dict[str, str]] = {}
    for role, readers in prepared.readers.items():
        for index, reader in enumerate(readers):
            hashes[_label(role, index, prepared.readers) if role != Role.FINETUNED else f"finetuned[{index}]"] = (
                reader.file_hashes()
            )
    for index, adapter in enumerate(prepared.adapters):
        hashes[f"adapters[{index}]"] = adapter.reader.file_hashes()
    from harness.core.hashing import sha256_file

    for role in (Role.PREFERENCE_DATA, Role.CALIBRATION_DATA):
        path = getattr(spec, role)
        if path is not None and Path(path).is_file():
            hashes[role] = {Path(path).name: sha256_file(path)}
    return {
        "method": prepared.method.info.name,
        "params": prepared.params.model_dump(mode="json"),
        "seed": spec.seed,
        "dtype": spec.dtype,
        "output": spec.output,
        "realign_bench_version": _package_version(),
        "inputs": {label: str(path) for label, path in spec.input_paths()},
        **({"adapter_updates": prepared.adapter_notes} if prepared.adapter_notes else {}),
        "input_sha256": hashes,
    }


def _read_all(prepared: _Prepared, name: str) -> TensorInputs:
    """The inputs of one tensor name with every dense input already read (runs in the prefetch thread)."""
    inputs = prepared.tensor_inputs(name)
    for role, readers in prepared.readers.items():
        for index in range(len(readers)):
            inputs.raw(role, index)
    return inputs


def _iter_outputs(prepared: _Prepared, state: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """Merged tensors in name order; the next name's inputs are read while this one is computed."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge-read") as reader_pool:
        pending: Future[TensorInputs] | None = None
        for position, name in enumerate(prepared.names):
            inputs = pending.result() if pending is not None else _read_all(prepared, name)
            following = prepared.names[position + 1] if position + 1 < len(prepared.names) else None
            pending = reader_pool.submit(_read_all, prepared, following) if following is not None else None
            yield name, _merge_one(prepared, state, name, inputs)
            inputs.release()


def _merge_one(prepared: _Prepared, state: Any, name: str, inputs: TensorInputs) -> torch.Tensor:
    ctx = TensorContext(name=name, seed=prepared.spec.seed, state=state, out_dtype=prepared.out_dtype[name])
    reference_raw = inputs.raw(prepared.reference)
    if not reference_raw.is_floating_point():
        result = reference_raw  # integer buffers are copied, never merged
    else:
        result = prepared.method.merge_tensor(inputs, prepared.params, ctx)
    if tuple(result.shape) != tuple(reference_raw.shape):
        raise CheckpointError(
            f"method {prepared.method.info.name!r} returned shape {list(result.shape)} for tensor '{name}', "
            f"expected {list(reference_raw.shape)}"
        )
    out = result.to(prepared.out_dtype[name])
    if not prepared.spec.allow_nonfinite:
        check_finite(out, name, f"method {prepared.method.info.name!r} output", NONFINITE_HINT)
    return out


def merge(spec: MergeSpec, *, threads: int | None = None, device: str | torch.device = "cpu") -> Path:
    """Run one merge; returns the output directory (written atomically).

    ``threads``: torch compute threads (default: all cores); inputs are read by one extra thread,
    one tensor ahead. ``device``: ``cuda`` computes on the GPU (inputs are copied there tensor by
    tensor); refused with a clear error when no GPU is usable. Neither changes the merge's identity.
    """
    run_device = resolve_device(device)
    thread_count = _resolve_threads(threads)
    prepared = _open(spec)
    prepared.device = run_device
    try:
        with torch_threads(thread_count):
            return _merge_prepared(spec, prepared)
    finally:
        prepared.close()


def _merge_prepared(spec: MergeSpec, prepared: _Prepared) -> Path:
    ctx = PrepareContext(
        names=prepared.names,
        readers=prepared.readers,
        adapters=prepared.adapters,
        params=prepared.params,
        seed=spec.seed,
        data={r: Path(p) for r in (Role.PREFERENCE_DATA, Role.CALIBRATION_DATA) if (p := getattr(spec, r)) is not None},
        tensor_inputs=prepared.tensor_inputs,
    )
    ctx.calibration = _run_calibration(prepared)
    state = prepared.method.prepare(ctx)
    metadata = _provenance(prepared)
    if ctx.calibration is not None:
        manifest = ctx.calibration.manifest
        metadata["calibration"] = {"key": manifest["key"], "data": manifest["data"], "cost": ctx.calibration.cost}
    if spec.output == "adapter":
        factors = prepared.method.emit_adapter(ctx, state)
        if not spec.allow_nonfinite:
            for key, value in _named_tensors(factors):
                check_finite(value, key, f"method {spec.method!r} adapter output", NONFINITE_HINT)
        out = save_adapter(factors, prepared.adapters[0], spec.out, overwrite=spec.overwrite)
        from harness.core.hashing import canonical_json

        (out / "realign_merge.json").write_text(canonical_json(metadata) + "\n")
        return out
    ref_reader = prepared.readers[prepared.reference][0]
    aux = ref_reader.root if Path(ref_reader.path).is_dir() else None
    extra = prepared.method.extra_tensors(ctx, state)
    clashing = sorted(set(extra) & set(prepared.names))
    if clashing:
        raise CheckpointError(f"method {spec.method!r}: extra tensor '{clashing[0]}' is already an input tensor")
    config_updates = prepared.method.config_updates(ctx, state)
    if config_updates and aux is None:
        raise CheckpointError(f"method {spec.method!r} edits config.json, but {ref_reader.path} has none to edit")
    layout = [(name, tuple(ref_reader.shape(name)), prepared.out_dtype[name]) for name in prepared.names]
    layout += [(name, tuple(tensor.shape), tensor.dtype) for name, tensor in sorted(extra.items())]
    with (
        CheckpointWriter(
            spec.out,
            max_shard_size=_parse_size(spec.max_shard_size),
            metadata=metadata,
            copy_aux_from=None if config_updates else aux,
            overwrite=spec.overwrite,
            layout=layout,
        ) as writer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="merge-write") as write_pool,
    ):
        # One tensor is written while the next is computed; waiting on the previous write first
        # bounds memory to two output tensors (and re-raises a write error at once).
        writing: Future[None] | None = None
        for name, tensor in _iter_outputs(prepared, state):
            if writing is not None:
                writing.result()
            writing = write_pool.submit(writer.add, name, tensor)
        if writing is not None:
            writing.result()
        for name, tensor in sorted(extra.items()):
            if not spec.allow_nonfinite:
                check_finite(tensor, name, f"method {spec.method!r} output", NONFINITE_HINT)
            writer.add(name, tensor)
        if config_updates and aux is not None:  # edited inside the temp dir: the commit stays atomic
            _write_config_updates(aux, writer.tmp_dir, config_updates)
    _fix_config_dtype(spec.out, spec.dtype)
    return writer.out_dir


def _write_config_updates(source: Path, tmp_dir: Path, updates: dict[str, Any]) -> None:
    """Copy ``source``'s aux files into the writer's temp dir and set ``updates`` in its config.json."""
    copy_aux_files(source, tmp_dir)
    config_path = tmp_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{source} has no config.json for the method's config updates {sorted(updates)}")
    config = json.loads(config_path.read_text())
    config.update(updates)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _named_tensors(value: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor inside ``value`` (a tensor, or dicts / sequences of them), with a dotted name."""
    if isinstance(value, torch.Tensor):
        yield prefix or "tensor", value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _named_tensors(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _named_tensors(item, f"{prefix}[{index}]")


def _fix_config_dtype(out: Path, dtype: str | None) -> None:
    """Keep config.json's dtype in step with a requested output dtype."""
    if dtype is None:
        return
    config_path = out / "config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    name = str(_DTYPES[dtype]).removeprefix("torch.")
    for key in ("torch_dtype", "dtype"):
        if key in config:
            config[key] = name
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


@dataclass
class MergePlan:
    method: str
    params: dict[str, Any]
    reference: str
    num_tensors: int
    reads: list[tuple[str, str, int]]  # (label, path, bytes)
    write_bytes: int
    out: str
    output_dtype: str
    adapter_updates: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        gib = 1024**3
        rows = [f"method {self.method} with {self.params}", f"tensor names from {self.reference}: {self.num_tensors}"]
        rows += [f"read  {label:<14} {path}  ({size / gib:.2f} GiB)" for label, path, size in self.reads]
        rows += [f"update {label:<13} {note}" for label, note in self.adapter_updates.items()]
        rows.append(f"write {self.out}  ({self.write_bytes / gib:.2f} GiB, {self.output_dtype})")
        return rows


def plan(spec: MergeSpec) -> MergePlan:
    """Validate the spec exactly as ``merge`` does and describe what would be read and written."""
    prepared = _open(spec)
    try:
        reads: list[tuple[str, str, int]] = []
        for role, readers in prepared.readers.items():
            for index, reader in enumerate(readers):
                size = sum(reader.nbytes(n) for n in reader.names())
                what = (
                    f"{reader.path} + adapter {reader.adapter.path}" if hasattr(reader, "adapter") else str(reader.path)
                )
                reads.append((f"{role}[{index}]" if role == Role.FINETUNED else role, what, size))
        for index, adapter in enumerate(prepared.adapters):
            size = sum(adapter.reader.nbytes(n) for n in adapter.reader.names())
            reads.append((f"adapters[{index}]", str(adapter.path), size))
        ref = prepared.readers[prepared.reference][0]
        write = sum(ref.nbytes(n) // ref.dtype(n).itemsize * prepared.out_dtype[n].itemsize for n in prepared.names)
        dtypes = sorted({str(d).removeprefix("torch.") for d in prepared.out_dtype.values()})
        return MergePlan(
            method=prepared.method.info.name,
            params=prepared.params.model_dump(mode="json"),
            reference=prepared.reference,
            num_tensors=len(prepared.names),
            reads=reads,
            write_bytes=write,
            out=str(spec.out),
            output_dtype=",".join(dtypes),
            adapter_updates=dict(prepared.adapter_notes),
        )
    finally:
        prepared.close()
