"""Writing a realigned checkpoint from a trained SOMF mask (soft, seeded binary sample, or threshold)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from harness.core.errors import CheckpointError, ConfigError
from harness.core.hashing import sha256_file
from realign_methods.somf._fusion import masked_fused_deltas
from realign_methods.somf._mask import INFERENCE_MODES, check_mask_shapes
from realign_methods.somf._train import MASK_FILE, SomfTrainConfig, make_config, read_mask
from realign_methods.somf._vectors import TaskVectors


def fused_weights_from_logits(
    vectors: TaskVectors,
    logits: Mapping[str, torch.Tensor],
    config: SomfTrainConfig,
    *,
    base: Callable[[str], torch.Tensor],
    mode: str = "soft",
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Realigned weights of the changed parameters for one inference ``mode`` (no grad)."""
    return vectors.weights(
        fused_deltas_from_logits(vectors, logits, config, mode=mode, seed=seed, threshold=threshold), base
    )


def fused_deltas_from_logits(
    vectors: TaskVectors,
    logits: Mapping[str, torch.Tensor],
    config: SomfTrainConfig,
    *,
    mode: str = "soft",
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Fused masked task vector per mask key for one inference ``mode`` (no grad)."""
    if mode not in INFERENCE_MODES:
        raise ConfigError(f"somf mask mode {mode!r} is unknown (expected one of {', '.join(INFERENCE_MODES)})")
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"somf threshold must be in (0, 1), got {threshold}")
    check_mask_shapes(logits, vectors.shapes, config.granularity)
    with torch.no_grad():
        return masked_fused_deltas(
            vectors,
            dict(logits),
            fusion=config.fusion,
            overrides=config.fusion_params,
            mode=mode,
            temperature=config.temperature,
            normalize=config.normalize,
            threshold=threshold,
            mask_seed=seed,
            fusion_seed=seed,
        )


def apply_trained_mask(
    mask_dir: str | Path,
    vectors: TaskVectors,
    out: str | Path,
    *,
    mode: str = "soft",
    seed: int = 0,
    threshold: float = 0.5,
    overwrite: bool = False,
    extra_metadata: Mapping[str, Any] | None = None,
    adapter_out: str | Path | None = None,
) -> Path:
    """Write the realigned full checkpoint (aligned/base weights with the masked fused task vectors).

    The output's ``realign_merge.json`` and safetensors metadata record the mask mode, seed,
    threshold, fusion rule and the mask's hash, so the leaderboard can say which variant it is.
    """
    from harness.core.checkpoints import CheckpointReader, CheckpointWriter

    if adapter_out is not None and vectors.setting != "lora":
        raise ConfigError(f"adapter_out needs the lora setting; this mask's task vectors are {vectors.setting!r}")
    mask_path = Path(mask_dir)
    logits, summary = read_mask(mask_path)
    if not summary:
        raise CheckpointError(f"{mask_path}: no somf.json next to the mask; it was not written by `realign somf train`")
    config = make_config(**summary["config"])
    if summary.get("setting") != vectors.setting:
        raise CheckpointError(
            f"{mask_path}: mask was trained in setting {summary.get('setting')!r}, task vectors are {vectors.setting!r}"
        )
    check_mask_shapes(logits, vectors.shapes, config.granularity, source=str(mask_path))
    mask_file = mask_path / MASK_FILE if mask_path.is_dir() else mask_path
    metadata = {
        "method": "somf",
        "somf_mask_mode": mode,
        "somf_seed": seed,
        "somf_threshold": threshold if mode == "threshold" else None,
        "somf_fusion": config.fusion,
        "somf_fusion_params": summary.get("resolved_fusion_params"),
        "somf_setting": vectors.setting,
        "somf_mask_sha256": sha256_file(mask_file),
        "somf_train_cache_key": summary.get("cache_key"),
        "somf_inputs": vectors.provenance,
        "somf_inputs_match_training": vectors.content_hash == summary.get("inputs_content_hash"),
        "somf_validation_preference_accuracy": summary.get("validation_preference_accuracy"),
        **dict(extra_metadata or {}),
    }
    fused = fused_deltas_from_logits(vectors, logits, config, mode=mode, seed=seed, threshold=threshold)
    with CheckpointReader(vectors.model_dir) as reader:
        weights = vectors.weights(fused, lambda name: reader.get(name).float())
        with CheckpointWriter(out, metadata=metadata, copy_aux_from=vectors.model_dir, overwrite=overwrite) as writer:
            for name in reader.names():
                value = weights.pop(name, None)
                writer.add(name, reader.get(name) if value is None else value.to(reader.dtype(name)))
            if weights:
                raise CheckpointError(
                    f"{vectors.model_dir}: has no tensor(s) {sorted(weights)[:5]} that the mask changes"
                )
    if adapter_out is not None:
        from harness.core.checkpoints import LoraAdapter, save_adapter

        template = LoraAdapter.load(vectors.adapter_template) if vectors.adapter_template else None
        if template is None:
            raise CheckpointError("no adapter config to reuse for adapter_out")
        save_adapter(vectors.adapter_factors(fused), template, adapter_out, overwrite=overwrite)
    return Path(out)
