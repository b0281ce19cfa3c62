"""Pure, differentiable per-tensor merge operations (float32; inputs never modified in place).

See :mod:`realign_methods._ops` for the conventions (they match ``peft.utils.merge_utils``).
"""

from realign_methods._ops import (
    FUSION_RULE_OPTIONS,
    FUSION_RULES,
    FusionOptions,
    apply_threshold,
    dare,
    dare_keep_mask,
    elect_and_merge,
    fuse_deltas,
    magnitude_prune,
    magnitude_threshold,
    magnitude_threshold_reference,
    mergekit_combine,
    mergekit_magnitude,
    mergekit_random,
    task_arithmetic,
    task_arithmetic_rows,
    ties,
    trim_elect_merge,
    weight_average,
    weighted_sum,
)

__all__ = [
    "FUSION_RULES",
    "FUSION_RULE_OPTIONS",
    "FusionOptions",
    "apply_threshold",
    "dare",
    "dare_keep_mask",
    "elect_and_merge",
    "fuse_deltas",
    "magnitude_prune",
    "magnitude_threshold",
    "magnitude_threshold_reference",
    "mergekit_combine",
    "mergekit_magnitude",
    "mergekit_random",
    "task_arithmetic",
    "task_arithmetic_rows",
    "ties",
    "trim_elect_merge",
    "weight_average",
    "weighted_sum",
]
