"""Generic model-merging methods over task vectors: task arithmetic, weight averaging, magnitude prune.

Task vectors are ``θ_F_i − anchor`` for each fine-tuned model and ``scaling·B@A`` for each LoRA
adapter; the anchor is ``base`` when given, else ``aligned`` (the model the fine-tunes start from).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from realign_methods import _ops as ops
from realign_methods._method import Method, MethodInfo, MethodParams, Role, TensorContext, TensorInputs
from realign_methods._registry import register_method
from realign_methods.methods._common import Lam, anchor_role, map_rows, rows, task_vector_rows

_TASKS = frozenset({Role.FINETUNED, Role.ADAPTERS})
_ANCHORS = frozenset({Role.BASE, Role.ALIGNED})


class TaskArithmeticParams(MethodParams):
    lam: float = Lam


class WeightAverageParams(MethodParams):
    weights: list[float] | None = Field(None, description="one weight per fine-tuned model (uniform if unset)")


class MagnitudePruneParams(MethodParams):
    density: float = Field(0.2, ge=0.0, le=1.0, description="fraction of each task vector kept (top-|δ|)")
    lam: float = Lam


class TiesParams(MethodParams):
    density: float = Field(0.2, ge=0.0, le=1.0, description="fraction of each task vector kept (top-|δ|)")
    lam: float = Lam
    reduce: Literal["mean", "sum"] = Field("mean", description="disjoint mean (TIES) or disjoint sum (SOMF)")


def _info(name: str, summary: str, params: type[MethodParams], reference: str) -> MethodInfo:
    return MethodInfo(
        name=name,
        summary=summary,
        params=params,
        one_of=(_TASKS, _ANCHORS),
        reference=reference,
        reference_inputs=(Role.BASE, Role.ALIGNED),
    )


@register_method
class TaskArithmetic(Method):
    info = _info(
        "task_arithmetic",
        "anchor + λ·Σ task vectors",
        TaskArithmeticParams,
        "Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023, arXiv:2212.04089",
    )

    def merge_tensor(self, inputs: TensorInputs, params: TaskArithmeticParams, ctx: TensorContext) -> torch.Tensor:
        anchor = anchor_role(inputs)
        n = inputs.num_task_vectors()

        def chunk(sl: slice) -> torch.Tensor:
            base = rows(inputs, anchor, 0, sl)
            deltas = [task_vector_rows(inputs, base, anchor, i, sl) for i in range(n)]
            return base + ops.weighted_sum(deltas, [params.lam] * n)

        return map_rows(inputs, ctx, anchor, chunk)


@register_method
class WeightAverage(Method):
    info = _info(
        "weight_average",
        "(weighted) mean of the fine-tuned models",
        WeightAverageParams,
        "Wortsman et al., Model soups, ICML 2022, arXiv:2203.05482",
    )

    def merge_tensor(self, inputs: TensorInputs, params: WeightAverageParams, ctx: TensorContext) -> torch.Tensor:
        anchor = anchor_role(inputs)
        n = inputs.num_task_vectors()

        def chunk(sl: slice) -> torch.Tensor:
            base = rows(inputs, anchor, 0, sl)
            deltas = [task_vector_rows(inputs, base, anchor, i, sl) for i in range(n)]
            return base + ops.weight_average(deltas, params.weights)

        return map_rows(inputs, ctx, anchor, chunk)


def _thresholds(inputs: TensorInputs, anchor: str, density: float) -> list[float | None]:
    """Per task vector, the top-k magnitude threshold over the whole tensor (one delta at a time)."""
    out = []
    for delta in inputs.task_vectors(anchor):
        out.append(ops.magnitude_threshold(delta, density))
        del delta
    return out


@register_method
class MagnitudePrune(Method):
    info = _info(
        "magnitude_prune",
        "anchor + λ·Σ top-density-by-magnitude task vectors",
        MagnitudePruneParams,
        "Yadav et al., TIES-Merging, NeurIPS 2023, arXiv:2306.01708 (trim step); peft merge_utils.magnitude_prune",
    )

    def merge_tensor(self, inputs: TensorInputs, params: MagnitudePruneParams, ctx: TensorContext) -> torch.Tensor:
        anchor = anchor_role(inputs)
        thresholds = _thresholds(inputs, anchor, params.density)

        def chunk(sl: slice) -> torch.Tensor:
            base = rows(inputs, anchor, 0, sl)
            kept = [ops.apply_threshold(task_vector_rows(inputs, base, anchor, i, sl), t) for i, t in enumerate(thresholds)]
            return base + ops.weighted_sum(kept, [params.lam] * len(kept))

        return map_rows(inputs, ctx, anchor, chunk)


@register_method
class Ties(Method):
    info = _info(
        "ties",
        "TIES: trim to top-density, elect sign by summed mass, disjoint mean (or sum), anchor + λ·merged",
        TiesParams,
        "Yadav et al., TIES-Merging: Resolving Interference When Merging Models, NeurIPS 2023, arXiv:2306.01708",
    )

    def merge_tensor(self, inputs: TensorInputs, params: TiesParams, ctx: TensorContext) -> torch.Tensor:
        anchor = anchor_role(inputs)
        # Thresholds need the whole tensor; the elementwise elect/merge then runs in row chunks.
        thresholds = _thresholds(inputs, anchor, params.density)
        weights = [params.lam] * len(thresholds)

        def chunk(sl: slice) -> torch.Tensor:
            base = rows(inputs, anchor, 0, sl)
            deltas = [task_vector_rows(inputs, base, anchor, i, sl) for i in range(len(thresholds))]
            return base + ops.trim_elect_merge(deltas, thresholds, weights, params.reduce)

        return map_rows(inputs, ctx, anchor, chunk)
