"""Task vectors in SOMF's three settings, and how fused deltas become model weights.

* ``lora`` (the paper's PEFT setting): the aligned model is base + an aligned LoRA adapter (A₀, B₀);
  each fine-tuned adapter (A, B) was trained from it. Task vectors live in factor space:
  τ_A = A − A₀, τ_B = B − B₀, and the realigned weight is W_base + s·(B₀ + fused τ_B)(A₀ + fused τ_A).
  Without an aligned adapter the anchors are zero (aligned model = base).
* ``merged``: the aligned model is a full checkpoint and each fine-tune is a LoRA adapter on it; the
  task vector is the merged update s·B·A of every adapted weight.
* ``full``: the aligned model and the fine-tuned models are full checkpoints; δ = θ_F − θ_A for
  every floating tensor that any fine-tune changed.

Mask keys are checkpoint tensor names (``<weight>::lora_A`` / ``<weight>::lora_B`` in factor space).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from harness.core.checkpoints import CheckpointReader, LoraAdapter, checkpoint_hash, lora_delta
from harness.core.errors import CheckpointError, ConfigError
from harness.core.hashing import hash_value, sha256_file

Setting = Literal["lora", "merged", "full"]
SETTINGS: tuple[str, ...] = get_args(Setting)
LORA_A, LORA_B = "::lora_A", "::lora_B"

# Cosine similarity between a fine-tune's and the aligned model's weight matrices (all 2-D tensors
# together): fine-tunes of one base are near 1 (0.7 even with noise as large as the weights), while
# independently initialised/pre-trained models of the same shape are near 0.
MIN_COSINE = 0.2
# Config fields that must agree between the aligned model and every fine-tune.
_ARCH_FIELDS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
)


@dataclass
class TaskVectors:
    """Task vectors sharing one key set (so one mask fits all of them)."""

    setting: Setting
    model_dir: Path  # checkpoint whose weights the realigned model starts from (base in the lora setting)
    deltas: list[dict[str, torch.Tensor]]  # one per fine-tune, fp32, identical keys and shapes
    anchors: dict[str, torch.Tensor] = field(default_factory=dict)  # lora: aligned factors A₀/B₀
    lora_scaling: dict[str, float] = field(default_factory=dict)  # lora: weight name -> s
    provenance: dict[str, Any] = field(default_factory=dict)  # input paths and content hashes
    adapter_template: Path | None = None  # lora: adapter whose config a realigned adapter reuses

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.deltas[0].items()}

    @property
    def parameter_count(self) -> int:
        return sum(v.numel() for v in self.deltas[0].values())

    @property
    def content_hash(self) -> str:
        """Hash of the inputs' contents (not their locations): part of the training cache key."""
        return hash_value(_without_paths(self.provenance), 32)

    def weight_names(self) -> list[str]:
        """Model weights the fused task vector changes."""
        if self.setting == "lora":
            return sorted(self.lora_scaling)
        return sorted(self.deltas[0])

    def weights(
        self, fused: Mapping[str, torch.Tensor], base: Callable[[str], torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Realigned weights from fused deltas; ``base(name)`` gives the starting weight (fp32)."""
        if self.setting != "lora":
            return {name: base(name) + fused[name] for name in self.deltas[0]}
        out = {}
        for name, scaling in self.lora_scaling.items():
            a = self.anchors[name + LORA_A] + fused[name + LORA_A]
            b = self.anchors[name + LORA_B] + fused[name + LORA_B]
            out[name] = base(name) + lora_delta(a, b, scaling)
        return out

    def adapter_factors(self, fused: Mapping[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Lora setting: the realigned adapter's ``{weight: (A₀ + fused τ_A, B₀ + fused τ_B)}``."""
        if self.setting != "lora":
            raise ConfigError(f"only the lora setting can write a LoRA adapter (this is {self.setting!r})")
        return {
            name: (
                self.anchors[name + LORA_A] + fused[name + LORA_A],
                self.anchors[name + LORA_B] + fused[name + LORA_B],
            )
            for name in self.lora_scaling
        }


def _adapter_hash(path: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(path.iterdir()) if f.is_file() and f.name.startswith("adapter_")}


def _checkpoint_hash(path: Path) -> str:
    """Content hash of the weight files and config (location-independent; what identifies a model)."""
    return checkpoint_hash(path, 32)


def _without_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k != "path"}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value


def _load_adapter(path: Path) -> Any:
    return LoraAdapter.load(path)


def _read_config(path: Path) -> dict[str, Any]:
    config = path / "config.json"
    if not config.is_file():
        return {}
    try:
        return dict(json.loads(config.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config}: unreadable config ({exc})") from exc


def _check_same_architecture(aligned: Path, other: Path) -> None:
    a, b = _read_config(aligned), _read_config(other)
    for key in _ARCH_FIELDS:
        if key in a and key in b and a[key] != b[key]:
            raise CheckpointError(
                f"{other}: config field {key!r} is {b[key]!r} but the aligned model {aligned} has {a[key]!r}; "
                "task vectors must come from fine-tunes of the same base model"
            )


def _check_cosine(dot: float, norm_a: float, norm_b: float, source: Path, aligned: Path, limit: float) -> None:
    cosine = dot / max((norm_a * norm_b) ** 0.5, 1e-30)
    if cosine < limit:
        raise CheckpointError(
            f"{source}: its weights have cosine similarity {cosine:.3f} with the aligned model {aligned} (minimum "
            f"{limit}); it looks like a different base model, not a fine-tune of the aligned one (lower min_cosine "
            "if this is intended)"
        )


def _check_same_declared_base(named: Sequence[tuple[Path, Any]]) -> None:
    """Adapters whose configs name different base models cannot share one task-vector space."""
    declared = {path: Path(str(adapter.base_model)).name for path, adapter in named if adapter.base_model}
    if len(set(declared.values())) > 1:
        listing = ", ".join(f"{path} -> {name!r}" for path, name in declared.items())
        raise CheckpointError(
            f"the LoRA adapters were trained on different base models ({listing}); SOMF's task vectors must share "
            "one base model"
        )


def load_full(aligned: str | Path, finetuned: Sequence[str | Path], *, min_cosine: float = MIN_COSINE) -> TaskVectors:
    """δ_i = θ_Fi − θ_A for every floating tensor changed by at least one fine-tune."""
    aligned = Path(aligned)
    if not finetuned:
        raise ConfigError("somf needs at least one fine-tuned model")
    paths = [Path(p) for p in finetuned]
    deltas: list[dict[str, torch.Tensor]] = [{} for _ in paths]
    # per fine-tune: (Σ θ_F·θ_A, Σ θ_A², Σ θ_F²) over 2-D tensors, for the same-base check
    similarity = [[0.0, 0.0, 0.0] for _ in paths]
    with CheckpointReader(aligned) as ref:
        names = ref.names()
        readers = []
        try:
            for path in paths:
                _check_same_architecture(aligned, path)
                reader = CheckpointReader(path)
                readers.append(reader)
                missing = sorted(set(names) - set(reader.names()))
                if missing:
                    raise CheckpointError(f"{path}: lacks tensor(s) of the aligned model {aligned}: {missing[:5]}")
            for name in names:
                anchor = ref.get(name)
                if not anchor.is_floating_point():
                    continue
                per_task: list[torch.Tensor] = []
                for path, reader in zip(paths, readers, strict=True):
                    if tuple(reader.shape(name)) != tuple(anchor.shape):
                        raise CheckpointError(
                            f"{path}: tensor {name!r} has shape {tuple(reader.shape(name))}, the aligned model's has "
                            f"{tuple(anchor.shape)}; task vectors must come from fine-tunes of the same base model"
                        )
                    tuned = reader.get(name).float()
                    if anchor.ndim >= 2:
                        sums = similarity[len(per_task)]
                        sums[0] += float((tuned * anchor.float()).sum())
                        sums[1] += float(anchor.float().square().sum())
                        sums[2] += float(tuned.square().sum())
                    per_task.append(tuned - anchor.float())
                if any(bool(d.any()) for d in per_task):
                    for target, delta in zip(deltas, per_task, strict=True):
                        target[name] = delta
        finally:
            for reader in readers:
                reader.close()
    for path, (dot, norm_a, norm_b) in zip(paths, similarity, strict=True):
        _check_cosine(dot, norm_a, norm_b, path, aligned, min_cosine)
    if not deltas[0]:
        raise CheckpointError(f"the fine-tuned model(s) {[str(p) for p in paths]} do not differ from {aligned}")
    provenance = {
        "setting": "full",
        "aligned": {"path": str(aligned), "hash": _checkpoint_hash(aligned)},
        "finetuned": [{"path": str(p), "hash": _checkpoint_hash(p)} for p in paths],
        "min_cosine": min_cosine,
    }
    return TaskVectors("full", aligned, deltas, provenance=provenance)


def load_merged(aligned: str | Path, adapters: Sequence[str | Path]) -> TaskVectors:
    """δ_i = s·B·A of each fine-tuned adapter (trained on the aligned model), zero where an adapter is absent."""
    aligned = Path(aligned)
    if not adapters:
        raise ConfigError("somf (setting merged) needs at least one fine-tuned LoRA adapter")
    loaded = [_load_adapter(Path(p)) for p in adapters]
    _check_same_declared_base([(Path(p), a) for p, a in zip(adapters, loaded, strict=True)])
    with CheckpointReader(aligned) as ref:
        for adapter in loaded:
            adapter.check_base(ref)
        names = sorted({m for adapter in loaded for m in adapter.modules()})
        shapes = {name: tuple(ref.shape(name)) for name in names}
        replaced = sorted({n for adapter in loaded for n in adapter.replacements()} - set(names))
        originals = {name: ref.get(name).float() for name in replaced}
        shapes.update({name: tuple(t.shape) for name, t in originals.items()})
        names = sorted([*names, *replaced])
        deltas: list[dict[str, torch.Tensor]] = []
        for adapter in loaded:
            per = {}
            saved = adapter.replacements()  # modules_to_save: their task vector is saved − aligned
            for name in names:
                delta = adapter.delta(name)
                value = torch.zeros(shapes[name]) if delta is None else delta.float()
                if name in saved:
                    value = (
                        value + saved[name].float() - (originals[name] if name in originals else ref.get(name).float())
                    )
                per[name] = value
            deltas.append(per)
    provenance = {
        "setting": "merged",
        "aligned": {"path": str(aligned), "hash": _checkpoint_hash(aligned)},
        "adapters": [{"path": str(p), "hash": _adapter_hash(Path(p))} for p in adapters],
    }
    return TaskVectors("merged", aligned, deltas, provenance=provenance)


def load_lora(
    base: str | Path, adapters: Sequence[str | Path], aligned_adapter: str | Path | None = None
) -> TaskVectors:
    """Factor-space task vectors τ = (A − A₀, B − B₀), the paper's PEFT setting."""
    base = Path(base)
    if not adapters:
        raise ConfigError("somf (setting lora) needs at least one fine-tuned LoRA adapter")
    loaded = [(Path(p), _load_adapter(Path(p))) for p in adapters]
    anchor_adapter = _load_adapter(Path(aligned_adapter)) if aligned_adapter is not None else None
    _check_same_declared_base(
        [*loaded, *([(Path(str(aligned_adapter)), anchor_adapter)] if anchor_adapter is not None else [])]
    )
    with CheckpointReader(base) as ref:
        for _, adapter in loaded:
            adapter.check_base(ref)
        if anchor_adapter is not None:
            anchor_adapter.check_base(ref)
    first_path, first = loaded[0]
    modules = sorted(first.modules())
    reference = anchor_adapter if anchor_adapter is not None else first
    reference_name = str(aligned_adapter) if anchor_adapter is not None else str(first_path)
    everyone = [*loaded, *([(Path(str(aligned_adapter)), anchor_adapter)] if anchor_adapter is not None else [])]
    for path, adapter in everyone:
        if sorted(adapter.modules()) != modules:
            raise CheckpointError(
                f"{path}: adapts modules {sorted(adapter.modules())[:3]}... but {first_path} adapts {modules[:3]}...; "
                "factor-space task vectors need adapters over the same modules (use setting 'merged' otherwise)"
            )
        if adapter.replacements():
            raise CheckpointError(
                f"{path}: saves full modules (modules_to_save) besides LoRA factors; factor-space SOMF cannot mask "
                "them (use setting 'merged')"
            )
        for name in modules:
            if abs(adapter.scaling_for(name) - reference.scaling_for(name)) > 1e-9:
                raise CheckpointError(
                    f"{path}: LoRA scaling of {name!r} is {adapter.scaling_for(name)}, {reference_name} has "
                    f"{reference.scaling_for(name)}; factor-space task vectors need one scaling (use setting 'merged')"
                )
    anchors: dict[str, torch.Tensor] = {}
    scaling: dict[str, float] = {}
    for name in modules:
        factors = first.factors(name)
        if factors is None:
            raise CheckpointError(f"{first_path}: no LoRA factors for {name!r}")
        if anchor_adapter is not None:
            anchor_factors = anchor_adapter.factors(name)
            if anchor_factors is None:
                raise CheckpointError(f"{aligned_adapter}: no LoRA factors for {name!r}")
            anchors[name + LORA_A], anchors[name + LORA_B] = (t.float() for t in anchor_factors)
        else:
            anchors[name + LORA_A] = torch.zeros(factors[0].shape)
            anchors[name + LORA_B] = torch.zeros(factors[1].shape)
        scaling[name] = float(reference.scaling_for(name))
    deltas = []
    for path, adapter in loaded:
        per = {}
        for name in modules:
            factors = adapter.factors(name)
            if factors is None:
                raise CheckpointError(f"{path}: no LoRA factors for {name!r}")
            for suffix, value in zip((LORA_A, LORA_B), factors, strict=True):
                anchor = anchors[name + suffix]
                if tuple(value.shape) != tuple(anchor.shape):
                    raise CheckpointError(
                        f"{path}: LoRA factor {name + suffix!r} has shape {tuple(value.shape)}, expected "
                        f"{tuple(anchor.shape)} (same rank as {reference_name})"
                    )
                per[name + suffix] = value.float() - anchor
        deltas.append(per)
    provenance = {
        "setting": "lora",
        "base": {"path": str(base), "hash": _checkpoint_hash(base)},
        "aligned_adapter": None
        if aligned_adapter is None
        else {"path": str(aligned_adapter), "hash": _adapter_hash(Path(aligned_adapter))},
        "adapters": [{"path": str(p), "hash": _adapter_hash(p)} for p, _ in loaded],
    }
    template = Path(aligned_adapter) if aligned_adapter is not None else first_path
    return TaskVectors(
        "lora", base, deltas, anchors=anchors, lora_scaling=scaling, provenance=provenance, adapter_template=template
    )


def load_task_vectors(
    setting: str,
    *,
    aligned: str | Path | None = None,
    finetuned: Sequence[str | Path] = (),
    adapters: Sequence[str | Path] = (),
    base: str | Path | None = None,
    aligned_adapter: str | Path | None = None,
    min_cosine: float = MIN_COSINE,
) -> TaskVectors:
    """Dispatch on ``setting`` with a clear error for a missing input."""
    if setting not in SETTINGS:
        raise ConfigError(f"somf setting {setting!r} is unknown (expected one of {', '.join(SETTINGS)})")
    if setting == "full":
        if aligned is None:
            raise ConfigError("somf setting 'full' needs the aligned model (aligned=...)")
        return load_full(aligned, finetuned, min_cosine=min_cosine)
    if setting == "merged":
        if aligned is None:
            raise ConfigError("somf setting 'merged' needs the aligned model (aligned=...)")
        return load_merged(aligned, adapters)
    model = base if base is not None else aligned
    if model is None:
        raise ConfigError("somf setting 'lora' needs the base model the adapters were trained on (base=...)")
    return load_lora(model, adapters, aligned_adapter)


def vectors_from_provenance(provenance: Mapping[str, Any]) -> TaskVectors:
    """Reload the task vectors a mask was trained on (paths recorded in its ``somf.json``)."""
    setting = str(provenance.get("setting"))

    def path_of(entry: Any) -> str | None:
        return None if entry is None else str(entry["path"])

    try:
        return load_task_vectors(
            setting,
            aligned=path_of(provenance.get("aligned")),
            base=path_of(provenance.get("base")),
            aligned_adapter=path_of(provenance.get("aligned_adapter")),
            finetuned=[str(e["path"]) for e in provenance.get("finetuned", [])],
            adapters=[str(e["path"]) for e in provenance.get("adapters", [])],
            min_cosine=float(provenance.get("min_cosine", MIN_COSINE)),
        )
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"somf.json inputs are incomplete ({exc}); pass the inputs explicitly") from exc
