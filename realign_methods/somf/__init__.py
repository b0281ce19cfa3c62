"""SOMF (Yi et al. 2024, arXiv 2405.09055): safety-subspace masks over task vectors, learned with DPO.

>>> vectors = load_task_vectors("lora", base=BASE, adapters=[MATH_LORA], aligned_adapter=SAFE_LORA)
>>> mask_dir = train_mask(vectors, SomfTrainConfig(fusion="ties", steps=500), "runs/somf-mask")
>>> apply_trained_mask(mask_dir, vectors, "runs/somf-model", mode="sample", seed=0)
"""

from realign_methods.somf._apply import (
    apply_trained_mask,
    fused_deltas_from_logits,
    fused_weights_from_logits,
)
from realign_methods.somf._data import PreferencePair, load_pairs, load_preference_data, split_by_prompt
from realign_methods.somf._fusion import FUSIONS, fuse, fusion_params
from realign_methods.somf._mask import (
    GRANULARITIES,
    GRANULARITY_COST,
    INFERENCE_MODES,
    apply_mask,
    draw_mask,
    init_logits,
)
from realign_methods.somf._train import (
    FusionName,
    SomfModel,
    SomfTrainConfig,
    SomfTrainingFields,
    make_config,
    read_mask,
    train_cache_key,
    train_mask,
)
from realign_methods.somf._vectors import SETTINGS, TaskVectors, load_task_vectors

__all__ = [
    "FUSIONS",
    "GRANULARITIES",
    "GRANULARITY_COST",
    "INFERENCE_MODES",
    "SETTINGS",
    "FusionName",
    "PreferencePair",
    "SomfModel",
    "SomfTrainConfig",
    "SomfTrainingFields",
    "TaskVectors",
    "apply_mask",
    "apply_trained_mask",
    "draw_mask",
    "fuse",
    "fused_deltas_from_logits",
    "fused_weights_from_logits",
    "fusion_params",
    "init_logits",
    "load_pairs",
    "load_preference_data",
    "load_task_vectors",
    "make_config",
    "read_mask",
    "split_by_prompt",
    "train_cache_key",
    "train_mask",
]
