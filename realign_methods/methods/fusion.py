"""Model merging over task vectors as one generalized task-arithmetic method, registered as variants.

Task vectors are ``θ_F_i − anchor`` for each fine-tuned model and ``scaling·B@A`` for each LoRA
adapter; the anchor is ``base`` when given, else ``aligned`` (the model the fine-tunes start from).
Every variant is the same pipeline with different options (:class:`FusionRule`):

  sparsify  none | magnitude (top-density by |δ|) | dare (random drop p, survivors ×1/(1−p))
  consensus none | sign (elect the sign of the summed mass, keep agreeing entries)
  reduce    sum (λ·Σ) | mean (Σ w_i·δ_i / Σ w_i) | disjoint_mean (÷ agreeing count) | param (TIES's ``reduce``)

``*_mergekit`` variants reproduce mergekit 0.1.5's generalized task arithmetic instead (exact-k
by argsort, weights before the election, Σ weight·agree normalisation, L1-rescaled DARE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field

from harness.core.errors import ConfigError
from realign_methods import _kernels as kernels
from realign_methods import _ops as ops
from realign_methods._method import (
    Method,
    MethodInfo,
    MethodParams,
    Role,
    TensorContext,
    TensorInputs,
)
from realign_methods._registry import register_method
from realign_methods.methods._common import Lam, anchor_role, map_rows, rows, task_vector_rows

_TASKS = frozenset({Role.FINETUNED, Role.ADAPTERS})
_ANCHORS = frozenset({Role.BASE, Role.ALIGNED})
_DENSITY = Field(0.2, ge=0.0, le=1.0, description="fraction of each task vector kept (top-|δ|)")
_DROP = Field(0.3, ge=0.0, lt=1.0, description="drop probability per element")
_TIES = "Yadav et al., TIES-Merging: Resolving Interference When Merging Models, NeurIPS 2023, arXiv:2306.01708"
_DARE = "Yu et al., Language Models are Super Mario (DARE), ICML 2024, arXiv:2311.03099"
_MERGEKIT = "; semantics of mergekit 0.1.5 (Goddard et al., Arcee's MergeKit, EMNLP 2024 Industry, arXiv:2403.13257)"


class TaskArithmeticParams(MethodParams):
    lam: float = Lam


class WeightAverageParams(MethodParams):
    weights: list[float] | None = Field(None, description="one weight per fine-tuned model (uniform if unset)")


class MagnitudePruneParams(MethodParams):
    density: float = _DENSITY
    lam: float = Lam


class TiesParams(MethodParams):
    density: float = _DENSITY
    lam: float = Lam
    reduce: Literal["mean", "sum"] = Field("mean", description="disjoint mean (TIES) or disjoint sum (SOMF)")


class DareParams(MethodParams):
    p: float = _DROP
    lam: float = Lam


class DareTiesParams(MethodParams):
    p: float = _DROP
    lam: float = Lam
    reduce: Literal["mean", "sum"] = Field("mean", description="disjoint mean (TIES) or disjoint sum")


class MergekitParams(MethodParams):
    """mergekit's parameters: per-model ``weight``/``density`` (a list, or one value for all)."""

    weights: list[float] | float = Field(1.0, description="mergekit `weight`, per task vector")
    density: list[float] | float = Field(1.0, description="mergekit `density` (kept fraction), per task vector")
    lam: float = Field(1.0, description="mergekit `lambda`: scales the merged delta")
    normalize: bool | None = Field(None, description="divide by Σ weight(·agree); unset: the method's default")
    rescale: bool | None = Field(None, description="L1-rescale sparsified vectors; unset: the method's default")


@dataclass(frozen=True)
class FusionRule:
    """One registered variant of the generalized task arithmetic: its options and paper."""

    summary: str
    params: type[MethodParams]
    reference: str
    sparsify: Literal["none", "magnitude", "dare"] = "none"
    consensus: Literal["none", "sign"] = "none"
    reduce: Literal["sum", "mean", "disjoint_mean", "param"] = "sum"
    #: mergekit semantics; then ``normalize``/``rescale`` are the defaults of that mergekit method
    mergekit: bool = False
    normalize: bool = False
    rescale: bool = False
    aliases: tuple[str, ...] = ()


#: every registered variant, name → options (the single place a fusion rule is defined)
FUSION_VARIANTS: dict[str, FusionRule] = {
    "task_arithmetic": FusionRule(
        "anchor + λ·Σ task vectors",
        TaskArithmeticParams,
        "Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023, arXiv:2212.04089",
    ),
    "weight_average": FusionRule(
        "(weighted) mean of the fine-tuned models",
        WeightAverageParams,
        "Wortsman et al., Model soups, ICML 2022, arXiv:2203.05482",
        reduce="mean",
    ),
    "magnitude_prune": FusionRule(
        "anchor + λ·Σ top-density-by-magnitude task vectors",
        MagnitudePruneParams,
        _TIES + " (trim step); peft merge_utils.magnitude_prune",
        sparsify="magnitude",
    ),
    "ties": FusionRule(
        "TIES: trim to top-density, elect sign by summed mass, disjoint mean (or sum), anchor + λ·merged",
        TiesParams,
        _TIES,
        sparsify="magnitude",
        consensus="sign",
        reduce="param",
    ),
    "dare": FusionRule(
        "anchor + λ·Σ DARE(task vector, p); seeded per tensor (global seed + tensor name)",
        DareParams,
        _DARE,
        sparsify="dare",
        aliases=("dare_linear",),
    ),
    "dare_ties": FusionRule(
        "DARE drop-and-rescale, then TIES sign election and disjoint mean (or sum), anchor + λ·merged",
        DareTiesParams,
        _DARE + " (DARE + TIES)",
        sparsify="dare",
        consensus="sign",
        reduce="param",
    ),
    "task_arithmetic_mergekit": FusionRule(
        "mergekit task_arithmetic: base + λ·Σ w_i·δ_i",
        MergekitParams,
        "Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023, arXiv:2212.04089" + _MERGEKIT,
        mergekit=True,
    ),
    "ties_mergekit": FusionRule(
        "mergekit ties: exact-k magnitude trim, weighted sign election, Σ w·agree normalisation",
        MergekitParams,
        _TIES + _MERGEKIT,
        sparsify="magnitude",
        consensus="sign",
        mergekit=True,
        normalize=True,
    ),
    "dare_ties_mergekit": FusionRule(
        "mergekit dare_ties: Bernoulli(density) keep, L1 rescale, weighted sign election",
        MergekitParams,
        _DARE + _MERGEKIT,
        sparsify="dare",
        consensus="sign",
        mergekit=True,
        rescale=True,
    ),
    "dare_linear_mergekit": FusionRule(
        "mergekit dare_linear: Bernoulli(density) keep, L1 rescale, base + Σ w_i·δ_i",
        MergekitParams,
        _DARE + _MERGEKIT,
        sparsify="dare",
        mergekit=True,
        rescale=True,
    ),
}


class TaskVectorMerge(Method):
    """Generalized task arithmetic; each subclass carries one :class:`FusionRule`."""

    rule: FusionRule

    def merge_tensor(self, inputs: TensorInputs, params: MethodParams, ctx: TensorContext) -> torch.Tensor:
        anchor = anchor_role(inputs)
        if self.rule.mergekit:
            return self._merge_mergekit(inputs, params, ctx, anchor)
        if self.rule.sparsify == "dare":
            return self._merge_dare(inputs, params, ctx, anchor)
        return self._merge_rows(inputs, params, ctx, anchor)

    def _task_weights(self, params: MethodParams, n: int) -> list[float]:
        return [float(getattr(params, "lam", 1.0))] * n

    def _reduce(self, params: MethodParams) -> ops.Reduce:
        return getattr(params, "reduce", "mean") if self.rule.reduce == "param" else "mean"

    def _merge_rows(self, inputs: TensorInputs, params: MethodParams, ctx: TensorContext, anchor: str) -> torch.Tensor:
        """Row-chunked path; magnitude thresholds need the whole tensor, so they come first."""
        n = inputs.num_task_vectors()
        rule = self.rule
        dense = not inputs.count("adapters")
        base = inputs.raw(anchor)
        models = [inputs.raw("finetuned", i) for i in range(n)] if dense else []
        thresholds: list[float | None] = [None] * n
        if rule.sparsify == "magnitude":
            density = float(_option(params, "density"))
            if dense:
                thresholds = kernels.magnitude_thresholds(base, models, density)
            else:
                thresholds = [ops.magnitude_threshold(delta, density) for delta in inputs.task_vectors(anchor)]
        weights = self._task_weights(params, n)
        if rule.reduce == "mean" and rule.consensus == "none":
            given = getattr(params, "weights", None)
            weights = _per_task(1.0 if given is None else given, n, "weights")
            norm = sum(weights)
            if norm == 0:
                raise ConfigError("weight_average: the weights sum to 0")
            weights = [w / norm for w in weights]
        if dense and (rule.consensus == "sign" or rule.sparsify == "none"):
            out = torch.empty(base.shape, dtype=ctx.out_dtype or base.dtype)
            if rule.consensus == "sign":
                return kernels.ties_merge(base, models, thresholds, weights, self._reduce(params), out)
            return kernels.task_arithmetic(base, models, weights, out)

        def chunk(sl: slice) -> torch.Tensor:
            anchor_rows = rows(inputs, anchor, 0, sl)
            deltas = [task_vector_rows(inputs, anchor_rows, anchor, i, sl) for i in range(n)]
            if rule.consensus == "sign":
                return anchor_rows + ops.trim_elect_merge(deltas, thresholds, weights, self._reduce(params))
            kept = [ops.apply_threshold(d, t) for d, t in zip(deltas, thresholds, strict=True)]
            return anchor_rows + ops.weighted_sum(kept, weights)

        return map_rows(inputs, ctx, anchor, chunk)

    def _merge_dare(self, inputs: TensorInputs, params: MethodParams, ctx: TensorContext, anchor: str) -> torch.Tensor:
        p = float(_option(params, "p"))
        lam = float(_option(params, "lam"))
        if not inputs.count("adapters"):
            # Dense fine-tunes: the fused kernel, whose keep masks are drawn per (tensor seed, task,
            # chunk), so they do not depend on chunking or threads (torch.bernoulli's serial stream
            # capped DARE at ~13 ns per entry).
            base = inputs.raw(anchor)
            models = [inputs.raw("finetuned", i) for i in range(inputs.num_task_vectors())]
            out = torch.empty(base.shape, dtype=ctx.out_dtype or base.dtype)
            weights = self._task_weights(params, len(models))
            consensus = self.rule.consensus == "sign"
            return kernels.dare_merge(
                base, models, p, ctx.rng_seed, weights, out, consensus=consensus, reduce=self._reduce(params)
            )
        # Adapters: the same masks (seeded per tensor and task), over whole task vectors.
        total = inputs.get(anchor)
        dropped = [ops.dare(delta, p, seed=ctx.rng_seed, task=i) for i, delta in enumerate(inputs.task_vectors(anchor))]
        if self.rule.consensus == "sign":
            weights = self._task_weights(params, len(dropped))
            return total + ops.elect_and_merge(dropped, weights, self._reduce(params))
        for delta in dropped:
            total = total + delta * lam
        return total

    def _merge_mergekit(
        self, inputs: TensorInputs, params: MethodParams, ctx: TensorContext, anchor: str
    ) -> torch.Tensor:
        assert isinstance(params, MergekitParams)
        n = inputs.num_task_vectors()
        weights, densities = _per_task(params.weights, n, "weights"), _per_task(params.density, n, "density")
        rule = self.rule
        rescale = rule.rescale if params.rescale is None else params.rescale
        normalize = rule.normalize if params.normalize is None else params.normalize
        generator = ctx.generator()
        sparse = []
        for delta, density in zip(inputs.task_vectors(anchor), densities, strict=True):
            if rule.sparsify == "magnitude":
                delta = ops.mergekit_magnitude(delta, density, rescale=rescale)
            elif rule.sparsify == "dare":
                delta = ops.mergekit_random(delta, density, generator, rescale=rescale)
            sparse.append(delta)
        merged = ops.mergekit_combine(
            sparse, weights, consensus=rule.consensus == "sign", normalize=normalize, lam=params.lam
        )
        return inputs.get(anchor) + merged


#: the parameters each option reads from a variant's params model (checked when registering)
_NEEDS = {("sparsify", "magnitude"): ("density",), ("sparsify", "dare"): ("p", "lam"), ("reduce", "param"): ("reduce",)}


def _option(params: MethodParams, key: str) -> Any:
    """A parameter the rule's options need; :func:`_register` checked its params model has it."""
    return getattr(params, key)


def _per_task(value: list[float] | float, n: int, field: str) -> list[float]:
    if isinstance(value, int | float):
        return [float(value)] * n
    if len(value) != n:
        raise ConfigError(f"parameter {field!r}: expected one value per task vector ({n}), got {len(value)}")
    return [float(v) for v in value]


def _register(name: str, rule: FusionRule) -> None:
    if not rule.mergekit:
        for (option, value), keys in _NEEDS.items():
            missing = [k for k in keys if getattr(rule, option) == value and k not in rule.params.model_fields]
            if missing:
                raise TypeError(
                    f"fusion variant {name!r}: {option}={value} needs parameter(s) {missing} in {rule.params.__name__}"
                )
    info = MethodInfo(
        name=name,
        summary=rule.summary,
        params=rule.params,
        one_of=(_TASKS, _ANCHORS),
        reference=rule.reference,
        reference_inputs=(Role.BASE, Role.ALIGNED),
    )
    class_name = "".join(part.title() for part in name.split("_"))
    register_method(aliases=rule.aliases)(
        type(class_name, (TaskVectorMerge,), {"info": info, "rule": rule, "__module__": __name__})
    )


for _name, _rule in FUSION_VARIANTS.items():
    _register(_name, _rule)
