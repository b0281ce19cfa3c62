"""PEFT LoRA adapters: read factors, compute deltas, merge into a base checkpoint, write adapters back.

Factors are always returned in the *base weight's layout*: ``delta = scaling * B @ A`` has the shape of
the base weight, with ``A [r, in]`` and ``B [out, r]``. PEFT stores embedding LoRAs (``lora_embedding_A
[r, vocab]``, ``lora_embedding_B [dim, r]``) and ``fan_in_fan_out`` (GPT-2 Conv1D) LoRAs transposed;
``factors`` swaps and transposes them so callers never need to care, and ``save_adapter`` undoes it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from harness.core.checkpoints._atomic import make_temp_dir, move_into_place
from harness.core.checkpoints._reader import CheckpointReader
from harness.core.checkpoints._writer import DEFAULT_MAX_SHARD_SIZE, CheckpointWriter
from harness.core.errors import CheckpointError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."
# `<module>.lora_A.weight`, `<module>.lora_A.<adapter name>.weight`, `<module>.lora_embedding_A[.<name>]`
_FACTOR_KEY = re.compile(
    r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.(?P<adapter>[^.]+))??(?:\.weight)?$"
)
_UNSUPPORTED = {
    "lora_magnitude_vector": "DoRA (use_dora=True)",
    "lora_B.bias": "LoRA bias (lora_bias=True)",
}


def _pattern_value(patterns: Mapping[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches a module name's suffix as a regex."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


@dataclass(frozen=True)
class LoraModule:
    """One LoRA-adapted module: where its factors live in the adapter file and how they scale."""

    module: str  # module path in the base model, e.g. model.layers.0.self_attn.q_proj
    weight_name: str  # the base weight it changes, e.g. model.layers.0.self_attn.q_proj.weight
    a_key: str
    b_key: str
    rank: int
    alpha: float
    scaling: float
    transposed: bool  # PEFT stores it in the transposed layout (embedding or fan_in_fan_out)
    embedding: bool


def lora_delta(lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float, rows: slice = slice(None)) -> torch.Tensor:
    """The LoRA update ``scaling · B[rows] @ A``: the one copy of the formula (``rows`` bounds memory on big weights)."""
    return (lora_b[rows] @ lora_a) * scaling


class LoraAdapter:
    """A PEFT LoRA adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``)."""

    def __init__(self, path: Path, config: dict[str, Any], reader: CheckpointReader) -> None:
        self.path = path
        self.config = config
        self.reader = reader
        self._modules: dict[str, LoraModule] = {}
        self._replacements: dict[str, str] = {}  # modules_to_save: base weight name -> adapter key
        self._index_keys()

    @classmethod
    def load(cls, path: str | Path, *, allow_pickle: bool = False) -> LoraAdapter:
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"adapter not found: {path}")
        if not path.is_dir():
            raise CheckpointError(f"{path}: an adapter is a directory with {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}")
        config_path = path / ADAPTER_CONFIG
        if not config_path.is_file():
            raise CheckpointError(f"{path}: not a PEFT adapter ({ADAPTER_CONFIG} missing)")
        try:
            config = json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{config_path}: invalid JSON ({exc})") from exc
        peft_type = str(config.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise CheckpointError(f"{config_path}: peft_type is {peft_type}; only LORA adapters are supported")
        for field in ("r", "lora_alpha"):
            if not isinstance(config.get(field), int | float) or config[field] <= 0:
                raise CheckpointError(
                    f"{config_path}: field '{field}' must be a positive number, got {config.get(field)!r}"
                )
        if config.get("use_dora"):
            raise CheckpointError(f"{config_path}: DoRA adapters (use_dora=true) are not supported")
        weights = path / ADAPTER_WEIGHTS
        if weights.is_file():
            reader = CheckpointReader(weights)
        elif (path / "adapter_model.bin").is_file():
            reader = CheckpointReader(path / "adapter_model.bin", allow_pickle=allow_pickle)
        else:
            raise CheckpointError(f"{path}: adapter weights missing (expected {ADAPTER_WEIGHTS})")
        return cls(path, config, reader)

    # -- key bookkeeping ---------------------------------------------------------------------------
    def _index_keys(self) -> None:
        pairs: dict[str, dict[str, str]] = {}
        for key in self.reader.names():
            for marker, what in _UNSUPPORTED.items():
                if f".{marker}" in key:
                    raise CheckpointError(
                        f"{self.reader.path}: tensor '{key}' belongs to {what}, which is not supported"
                    )
            stripped = key.removeprefix(_PEFT_PREFIX)
            match = _FACTOR_KEY.match(stripped)
            if match is None:
                # modules_to_save, or an embedding's base weight saved alongside (save_embedding_layers):
                # PEFT loads these over the base tensor.
                name = stripped.replace(".modules_to_save", "").replace(".base_layer", "")
                self._replacements[name] = key
                continue
            pairs.setdefault(match["module"], {})[match["kind"]] = key
        fan_in_fan_out = bool(self.config.get("fan_in_fan_out", False))
        for module, kinds in pairs.items():
            embedding = "lora_embedding_A" in kinds or "lora_embedding_B" in kinds
            a_key = kinds.get("lora_embedding_A" if embedding else "lora_A")
            b_key = kinds.get("lora_embedding_B" if embedding else "lora_B")
            if a_key is None or b_key is None:
                present = next(iter(kinds.values()))
                raise CheckpointError(
                    f"{self.reader.path}: '{present}' has no matching {'B' if b_key is None else 'A'} factor"
                )
            rank = int(_pattern_value(self.config.get("rank_pattern") or {}, module, self.config["r"]))
            alpha = float(_pattern_value(self.config.get("alpha_pattern") or {}, module, self.config["lora_alpha"]))
            a_shape, b_shape = self.reader.shape(a_key), self.reader.shape(b_key)
            if len(a_shape) != 2 or len(b_shape) != 2 or a_shape[0] != rank or b_shape[1] != rank:
                raise CheckpointError(
                    f"{self.reader.path}: module '{module}': factors A {list(a_shape)} / B {list(b_shape)} "
                    f"do not have the configured rank {rank}"
                )
            scaling = alpha / math.sqrt(rank) if self.config.get("use_rslora") else alpha / rank
            self._modules[f"{module}.weight"] = LoraModule(
                module=module,
                weight_name=f"{module}.weight",
                a_key=a_key,
                b_key=b_key,
                rank=rank,
                alpha=alpha,
                scaling=scaling,
                transposed=embedding or fan_in_fan_out,
                embedding=embedding,
            )
        if not self._modules and not self._replacements:
            raise CheckpointError(f"{self.reader.path}: adapter holds no LoRA factors")

    # -- public face -------------------------------------------------------------------------------
    @property
    def base_model(self) -> str | None:
        value = self.config.get("base_model_name_or_path")
        return str(value) if value else None

    @property
    def rank(self) -> int:
        return int(self.config["r"])

    @property
    def alpha(self) -> float:
        return float(self.config["lora_alpha"])

    @property
    def scaling(self) -> float:
        """The adapter-wide scaling (alpha/r, or alpha/sqrt(r) with rsLoRA); see ``scaling_for``."""
        return self.alpha / math.sqrt(self.rank) if self.config.get("use_rslora") else self.alpha / self.rank

    def scaling_for(self, weight_name: str) -> float:
        """Scaling of one module (differs from ``scaling`` under rank_pattern / alpha_pattern)."""
        return self._module(weight_name).scaling

    def modules(self) -> dict[str, LoraModule]:
        """``{base weight name: LoraModule}`` for every LoRA-adapted module (iterate for the names)."""
        return dict(self._modules)

    def replacements(self) -> dict[str, torch.Tensor]:
        """Full tensors saved with the adapter (``modules_to_save``, saved embedding base weights) by base weight name."""
        return {name: self.reader.get(key) for name, key in self._replacements.items()}

    def _module(self, weight_name: str) -> LoraModule:
        module = self._modules.get(weight_name)
        if module is None:
            raise CheckpointError(f"{self.path}: no LoRA factors for base weight '{weight_name}'")
        return module

    def factors(self, weight_name: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(A [r, in], B [out, r])`` in fp32 and the base weight's layout, or None if not adapted."""
        module = self._modules.get(weight_name)
        if module is None:
            return None
        lora_a = self.reader.get(module.a_key).float()
        lora_b = self.reader.get(module.b_key).float()
        if module.transposed:  # stored delta is (B @ A).T == A.T @ B.T
            return lora_b.T.contiguous(), lora_a.T.contiguous()
        return lora_a, lora_b

    def delta(self, weight_name: str) -> torch.Tensor | None:
        """``scaling * B @ A`` in fp32, shaped like the base weight, or None if not adapted."""
        pair = self.factors(weight_name)
        if pair is None:
            return None
        lora_a, lora_b = pair
        return lora_delta(lora_a, lora_b, self._modules[weight_name].scaling)

    def apply(self, weight_name: str, tensor: torch.Tensor) -> torch.Tensor:
        """The base tensor ``weight_name`` with this adapter merged in, as PEFT's ``merge_and_unload``
        does: a saved module replaces it, then ``+ scaling·B@A`` in fp32, cast back to its dtype."""
        key = self._replacements.get(weight_name)
        if key is not None:
            tensor = self.reader.get(key).to(tensor.dtype)
        delta = self.delta(weight_name)
        if delta is not None:
            tensor = (tensor.float() + delta).to(tensor.dtype)
        return tensor

    def expected_shape(self, weight_name: str) -> tuple[int, int]:
        module = self._module(weight_name)
        a_shape, b_shape = self.reader.shape(module.a_key), self.reader.shape(module.b_key)
        out_dim, in_dim = b_shape[0], a_shape[1]
        return (in_dim, out_dim) if module.transposed else (out_dim, in_dim)

    def check_base(self, base: CheckpointReader) -> None:
        """Raise CheckpointError naming the module if the adapter does not fit ``base``."""
        for weight_name, module in self._modules.items():
            expected = self.expected_shape(weight_name)
            if weight_name not in base:
                raise CheckpointError(
                    f"adapter {self.path} does not match base {base.path}: module '{module.module}' "
                    f"expects base weight '{weight_name}' {list(expected)}, which the base lacks"
                )
            actual = base.shape(weight_name)
            if tuple(actual) != expected:
                raise CheckpointError(
                    f"adapter {self.path} does not match base {base.path}: module '{module.module}' expects "
                    f"'{weight_name}' of shape {list(expected)}, the base has {list(actual)}"
                )
        for weight_name, key in self._replacements.items():
            if weight_name not in base:
                raise CheckpointError(
                    f"adapter {self.path} does not match base {base.path}: saved module tensor '{key}' "
                    f"replaces '{weight_name}', which the base lacks"
                )
            saved_shape = tuple(self.reader.shape(key))
            if tuple(base.shape(weight_name)) != saved_shape:
                raise CheckpointError(
                    f"adapter {self.path} does not match base {base.path}: '{weight_name}' has shape "
                    f"{list(base.shape(weight_name))}, the adapter's saved module has {list(saved_shape)}"
                )

    def __repr__(self) -> str:
        return f"LoraAdapter({str(self.path)!r}, modules={len(self._modules)}, r={self.rank}, alpha={self.alpha})"


def merge_adapter(
    base: str | Path | CheckpointReader,
    adapter: str | Path | LoraAdapter,
    out: str | Path,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
) -> Path:
    """Stream ``base`` tensor by tensor, add each LoRA delta (fp32 math, base dtype out), write ``out``.

    Config, tokenizer and generation files come from the base directory; provenance goes to
    ``realign_merge.json``. Equivalent to PEFT's ``merge_and_unload`` + ``save_pretrained``.
    """
    reader = base if isinstance(base, CheckpointReader) else CheckpointReader(base)
    lora = adapter if isinstance(adapter, LoraAdapter) else LoraAdapter.load(adapter)
    lora.check_base(reader)
    metadata = {
        "method": "merge_adapter",
        "base": str(reader.path),
        "adapter": str(lora.path),
        "adapter_config": lora.config,
        "input_sha256": {
            **{f"base/{k}": v for k, v in reader.file_hashes().items()},
            **{f"adapter/{k}": v for k, v in lora.reader.file_hashes().items()},
        },
    }
    aux_source = reader.root if reader.path.is_dir() else None
    with CheckpointWriter(
        out, max_shard_size=max_shard_size, metadata=metadata, copy_aux_from=aux_source, overwrite=overwrite
    ) as writer:
        for name in reader.names():
            writer.add(name, lora.apply(name, reader.get(name)))
    return writer.out_dir


def save_adapter(
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    config: Mapping[str, Any] | LoraAdapter,
    out: str | Path,
    *,
    embeddings: Iterable[str] = (),
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PEFT adapter from ``{base weight name: (A [r, in], B [out, r])}`` in base-weight layout.

    ``config`` is an adapter config dict (or the LoraAdapter it came from); ``embeddings`` names the
    weights that are embedding tables (also taken from a LoraAdapter ``config``). Modules whose rank
    differs from the config's get ``rank_pattern`` entries. Atomic: temp dir renamed into ``out``.
    """
    out = Path(out).absolute()
    if isinstance(config, LoraAdapter):
        embedding_names = {n for n, m in config.modules().items() if m.embedding} | set(embeddings)
        config_dict = dict(config.config)
    else:
        embedding_names = set(embeddings)
        config_dict = dict(config)
    if not factors:
        raise CheckpointError(f"save_adapter: no factors given for {out}")
    config_dict.setdefault("peft_type", "LORA")
    for field in ("r", "lora_alpha"):
        if field not in config_dict:
            raise CheckpointError(f"save_adapter: adapter config for {out} lacks '{field}'")
    fan_in_fan_out = bool(config_dict.get("fan_in_fan_out", False))
    rank_pattern = dict(config_dict.get("rank_pattern") or {})
    tensors: dict[str, torch.Tensor] = {}
    for weight_name, (lora_a, lora_b) in factors.items():
        if not weight_name.endswith(".weight"):
            raise CheckpointError(f"save_adapter: '{weight_name}' is not a weight name (expected '<module>.weight')")
        if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[0] != lora_b.shape[1]:
            raise CheckpointError(
                f"save_adapter: '{weight_name}': expected A [r, in] and B [out, r], got "
                f"{list(lora_a.shape)} and {list(lora_b.shape)}"
            )
        module = weight_name.removesuffix(".weight")
        rank = int(lora_a.shape[0])
        if rank != int(_pattern_value(rank_pattern, module, config_dict["r"])):
            rank_pattern[re.escape(module)] = rank
        cast = dtype or lora_a.dtype
        if weight_name in embedding_names:
            tensors[f"{_PEFT_PREFIX}{module}.lora_embedding_A"] = lora_b.T.to(cast).contiguous()
            tensors[f"{_PEFT_PREFIX}{module}.lora_embedding_B"] = lora_a.T.to(cast).contiguous()
        elif fan_in_fan_out:
            tensors[f"{_PEFT_PREFIX}{module}.lora_A.weight"] = lora_b.T.to(cast).contiguous()
            tensors[f"{_PEFT_PREFIX}{module}.lora_B.weight"] = lora_a.T.to(cast).contiguous()
        else:
            tensors[f"{_PEFT_PREFIX}{module}.lora_A.weight"] = lora_a.to(cast).contiguous()
            tensors[f"{_PEFT_PREFIX}{module}.lora_B.weight"] = lora_b.to(cast).contiguous()
    if rank_pattern:
        config_dict["rank_pattern"] = rank_pattern

    if out.exists() and not overwrite:
        raise CheckpointError(f"output directory already exists: {out} (pass overwrite=True)")
    tmp = make_temp_dir(out)
    try:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config_dict, indent=2, sort_keys=True, default=str) + "\n")
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
