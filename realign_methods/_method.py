"""The ``Method`` protocol: what a realignment/merging method declares and computes.

A method is a subclass of :class:`Method` with a class attribute ``info`` (:class:`MethodInfo`) and
a per-tensor :meth:`Method.merge_tensor`. The streaming engine (``merge(spec)``) walks tensor names
of the reference input, builds a :class:`TensorInputs` (lazy, one tensor per input) and a
:class:`TensorContext` (per-tensor seeded generator, the state returned by ``prepare``) and writes
what ``merge_tensor`` returns. Optional hooks:

* :meth:`Method.prepare` — a whole-model pass before the walk (Safe LoRA picks layers, SOMF trains
  masks); its return value reaches every ``merge_tensor`` call as ``ctx.state``.
* :meth:`Method.emit_adapter` — factor-space methods may return a LoRA adapter instead of dense
  weights (engine: ``MergeSpec(output="adapter")``).

Register a class with ``@register_method`` (its name is ``info.name``, stated once), or a plain
per-tensor function with ``@tensor_method(...)`` (its keyword-only parameters become the parameter
model), both from :mod:`realign_methods`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import annotated_types
import torch
from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from harness.core.checkpoints import lora_delta
from harness.core.errors import ConfigError, name_unknown
from harness.core.roles import ReferenceRole
from realign_methods.calibration._spec import CalibrationSpec

if TYPE_CHECKING:
    from harness.core.checkpoints import CheckpointReader
    from realign_methods.calibration import Statistics


class Role(StrEnum):
    """An input a method can take (a ``MergeSpec`` field / CLI option); compares equal to its string."""

    ALIGNED = "aligned"
    UNALIGNED = "unaligned"
    BASE = "base"
    FINETUNED = "finetuned"
    ADAPTERS = "adapters"
    PREFERENCE_DATA = "preference_data"
    CALIBRATION_DATA = "calibration_data"


#: Inputs that are model weights (dense checkpoints) rather than adapters or data.
DENSE_INPUTS: tuple[Role, ...] = (Role.ALIGNED, Role.UNALIGNED, Role.BASE, Role.FINETUNED)


def _roles(owner: str, field_name: str, values: Iterable[str]) -> frozenset[Role]:
    known = {role.value for role in Role}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"method {owner!r}: unknown input kind(s) {unknown} in {field_name} (known: {', '.join(known)})"
        )
    return frozenset(Role(value) for value in values)


class MethodParams(BaseModel):
    """Base class of every method's parameter model: frozen, unknown fields refused.

    Declare fields with defaults and ranges, e.g. ``gamma: float = Field(0.5, ge=0, le=10)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


class NoParams(MethodParams):
    """For methods without parameters."""


@dataclass(frozen=True)
class AdapterParams:
    """Parameters through which the planner hands a method LoRA adapters instead of dense weights.

    ``aligned_adapter``: a parameter that, left unset, receives the aligned model's adapter path when
    the fine-tune's adapter continued from it. ``setting``: a parameter whose value chooses between
    the fine-tune's dense weights and its adapter, with ``adapter_values`` the values that read the
    adapter (a method taking both inputs without a ``setting`` reads the dense weights).
    """

    aligned_adapter: str = ""
    setting: str = ""
    adapter_values: frozenset[str] = frozenset()

    def names(self) -> tuple[str, ...]:
        return tuple(name for name in (self.aligned_adapter, self.setting) if name)


@dataclass(frozen=True)
class MethodInfo:
    """What a method is, what it needs and where it comes from (shown by ``realign methods show``)."""

    name: str
    summary: str
    params: type[MethodParams] = NoParams
    required: frozenset[Role] = frozenset()
    #: each group must have at least one member given (e.g. ``finetuned`` *or* ``adapters``)
    one_of: tuple[frozenset[Role], ...] = ()
    optional: frozenset[Role] = frozenset()
    data_free: bool = True
    reference: str = ""
    #: dense inputs in order of preference: the first one given defines tensor names, dtype and the
    #: config/tokenizer files copied to the output
    reference_inputs: tuple[Role, ...] = (Role.FINETUNED, Role.ALIGNED, Role.BASE, Role.UNALIGNED)
    #: inputs that take exactly one item when given (e.g. RESTA realigns one fine-tuned model)
    single: frozenset[Role] = frozenset()
    #: statistics of a model on data that the engine computes (cached) before ``prepare``
    calibration: CalibrationSpec | None = None
    #: where the method is defined: "dense" (any checkpoint; LoRA fine-tunes are read merged) or "lora"
    settings: str = ""
    #: set on baselines that evaluate one input unchanged (no merge): which reference row they are
    reference_role: ReferenceRole | None = None
    adapter_params: AdapterParams = AdapterParams()

    def __post_init__(self) -> None:
        # Plain strings are accepted (plugins, YAML) and normalised to Role, with a clear error otherwise.
        set_field = object.__setattr__
        for field_name in ("required", "optional", "single"):
            set_field(self, field_name, _roles(self.name, field_name, getattr(self, field_name)))
        set_field(self, "one_of", tuple(_roles(self.name, "one_of", group) for group in self.one_of))
        order = tuple(self.reference_inputs)
        set_field(
            self, "reference_inputs", tuple(sorted(_roles(self.name, "reference_inputs", order), key=order.index))
        )
        if self.reference_role is not None:
            if self.reference_role not in tuple(ReferenceRole):
                raise ConfigError(
                    f"method {self.name!r}: reference_role {self.reference_role!r} is not one of "
                    f"{', '.join(ReferenceRole)}"
                )
            set_field(self, "reference_role", ReferenceRole(self.reference_role))
        unknown = [name for name in self.adapter_params.names() if name not in self.params.model_fields]
        if unknown:
            raise ConfigError(
                f"method {self.name!r}: adapter_params name {unknown}, not parameters of "
                f"{self.params.__name__} (parameters: {', '.join(self.params.model_fields) or 'none'})"
            )

    @property
    def trains(self) -> bool:
        """Whether the method learns from data (runs long): executors schedule these first."""
        return not self.data_free

    @property
    def accepted_inputs(self) -> frozenset[Role]:
        return self.required | self.optional | frozenset().union(*self.one_of)


def parameter_ranges(params: type[MethodParams]) -> dict[str, str]:
    """Human-readable allowed range/choices of every parameter (``"0 <= p < 1"``, ``"mean | sum"``)."""
    ranges: dict[str, str] = {}
    for name, info in params.model_fields.items():
        lower = upper = ""
        for meta in info.metadata:
            if isinstance(meta, annotated_types.Ge):
                lower = f"{meta.ge} <= "
            elif isinstance(meta, annotated_types.Gt):
                lower = f"{meta.gt} < "
            elif isinstance(meta, annotated_types.Le):
                upper = f" <= {meta.le}"
            elif isinstance(meta, annotated_types.Lt):
                upper = f" < {meta.lt}"
        if lower or upper:
            ranges[name] = f"{lower}{name}{upper}"
            continue
        choices = getattr(info.annotation, "__args__", None)
        if choices and all(isinstance(c, str) for c in choices):
            ranges[name] = " | ".join(choices)
        else:
            ranges[name] = getattr(info.annotation, "__name__", str(info.annotation))
    return ranges


def validate_params(info: MethodInfo, values: Mapping[str, Any] | None) -> MethodParams:
    """Fill defaults and check ranges; errors name the method, the parameter and what is allowed."""
    values = dict(values or {})
    fields = info.params.model_fields
    unknown = sorted(set(values) - set(fields))
    if unknown:
        accepted = ", ".join(fields) or "none"
        raise ConfigError(
            f"method {info.name!r}: unknown parameter {name_unknown(unknown, list(fields), cutoff=0.5)}; "
            f"accepted parameters: {accepted}"
        )
    try:
        return info.params(**values)
    except ValidationError as exc:
        ranges = parameter_ranges(info.params)
        problems = []
        for error in exc.errors():
            field_name = str(error["loc"][0]) if error["loc"] else "?"
            allowed = ranges.get(field_name, "")
            problems.append(
                f"parameter {field_name!r} = {error.get('input')!r}: {error['msg']}"
                + (f" (allowed: {allowed})" if allowed else "")
            )
        raise ConfigError(f"method {info.name!r}: " + "; ".join(problems)) from None


def tensor_seed(seed: int, name: str) -> int:
    """A 63-bit seed for one tensor from the global seed and the tensor name (order-independent)."""
    digest = hashlib.sha256(f"{seed}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@dataclass
class TensorContext:
    """Per-tensor context handed to :meth:`Method.merge_tensor`."""

    name: str
    seed: int
    state: Any = None
    out_dtype: torch.dtype | None = None

    def generator(self) -> torch.Generator:
        """A fresh CPU generator seeded from (global seed, tensor name): same draws in any tensor order."""
        return torch.Generator().manual_seed(self.rng_seed)

    @property
    def rng_seed(self) -> int:
        """This tensor's seed, from (global seed, tensor name): DARE's ``ops.dare(..., seed=)`` masks."""
        return tensor_seed(self.seed, self.name)


def _constant(tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: tensor


class TensorInputs:
    """One tensor name across all inputs, loaded lazily (a tensor is read on first access only).

    ``raw(role, i)`` is the stored tensor (cached until :meth:`release`); ``get(role, i)`` and the
    properties return float32. Roles: ``aligned``, ``unaligned``, ``base``, ``finetuned`` (several)
    and ``adapters`` (several LoRA adapters; see :meth:`adapter_delta`).
    """

    def __init__(
        self,
        name: str,
        loaders: Mapping[str, Sequence[Callable[[], torch.Tensor]]],
        adapters: Sequence[Any] = (),
    ) -> None:
        self.name = name
        self._loaders = {role: list(fns) for role, fns in loaders.items() if fns}
        self._adapters = list(adapters)
        self._cache: dict[tuple[str, int], torch.Tensor] = {}

    @classmethod
    def from_tensors(
        cls, name: str, tensors: Mapping[str, torch.Tensor | Sequence[torch.Tensor]], adapters: Sequence[Any] = ()
    ) -> TensorInputs:
        """Build from in-memory tensors (tests, SOMF's training loop)."""
        loaders: dict[str, list[Callable[[], torch.Tensor]]] = {}
        for role, value in tensors.items():
            values = [value] if isinstance(value, torch.Tensor) else list(value)
            loaders[role] = [_constant(t) for t in values]
        return cls(name, loaders, adapters)

    def has(self, role: str) -> bool:
        return self.count(role) > 0

    def count(self, role: str) -> int:
        if role == Role.ADAPTERS:
            return len(self._adapters)
        return len(self._loaders.get(role, ()))

    def raw(self, role: str, index: int = 0) -> torch.Tensor:
        key = (role, index)
        if key not in self._cache:
            loaders = self._loaders.get(role)
            if not loaders or index >= len(loaders):
                raise ConfigError(f"tensor '{self.name}': input {role!r}[{index}] was not given")
            self._cache[key] = loaders[index]()
        return self._cache[key]

    def get(self, role: str, index: int = 0) -> torch.Tensor:
        return self.raw(role, index).float()

    def release(self, role: str | None = None, index: int | None = None) -> None:
        """Drop cached tensors (all, one role, or one input) to bound memory."""
        for key in list(self._cache):
            if (role is None or key[0] == role) and (index is None or key[1] == index):
                del self._cache[key]

    @property
    def aligned(self) -> torch.Tensor:
        return self.get(Role.ALIGNED)

    @property
    def unaligned(self) -> torch.Tensor:
        return self.get(Role.UNALIGNED)

    @property
    def base(self) -> torch.Tensor:
        return self.get(Role.BASE)

    def finetuned(self, index: int = 0) -> torch.Tensor:
        return self.get(Role.FINETUNED, index)

    def adapter(self, index: int = 0) -> Any:
        return self._adapters[index]

    def adapter_factors(self, index: int = 0) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """``(A [r, in], B [out, r], scaling)`` of adapter ``index`` for this weight, or None if untouched."""
        adapter = self._adapters[index]
        factors = adapter.factors(self.name)
        if factors is None:
            return None
        lora_a, lora_b = factors
        scaling = adapter.scaling_for(self.name) if hasattr(adapter, "scaling_for") else adapter.scaling
        return lora_a.float(), lora_b.float(), float(scaling)

    def adapter_delta(self, index: int = 0, rows: slice = slice(None)) -> torch.Tensor | None:
        """``scaling · B[rows] @ A`` of adapter ``index`` for this weight (float32), or None if untouched
        (``harness.core.checkpoints.lora_delta``; ``rows`` bounds memory on big weights)."""
        factors = self.adapter_factors(index)
        if factors is None:
            return None
        lora_a, lora_b, scaling = factors
        return lora_delta(lora_a, lora_b, scaling, rows)

    def task_vectors(self, anchor: str) -> Iterator[torch.Tensor]:
        """Each fine-tuned model minus ``anchor``, then each adapter's delta (zeros where untouched).

        A generator, so a caller can fold them one at a time without holding all of them.
        """
        anchor_tensor = self.get(anchor)
        for index in range(self.count(Role.FINETUNED)):
            yield self.finetuned(index) - anchor_tensor
        for index in range(self.count(Role.ADAPTERS)):
            delta = self.adapter_delta(index)
            yield torch.zeros_like(anchor_tensor) if delta is None else delta.reshape(anchor_tensor.shape)

    def num_task_vectors(self) -> int:
        return self.count(Role.FINETUNED) + self.count(Role.ADAPTERS)


@dataclass
class PrepareContext:
    """Whole-model view for :meth:`Method.prepare`: readers per role, adapters, names, data paths."""

    names: list[str]
    readers: dict[str, list[CheckpointReader]]
    adapters: list[Any]
    params: MethodParams
    seed: int
    data: dict[str, Path] = field(default_factory=dict)
    tensor_inputs: Callable[[str], TensorInputs] | None = None
    #: the calibration statistics when ``info.calibration`` is set (computed by the engine)
    calibration: Statistics | None = None

    def inputs(self, name: str) -> TensorInputs:
        """Lazy :class:`TensorInputs` for one tensor name (what ``merge_tensor`` will get)."""
        if self.tensor_inputs is None:
            raise ConfigError("this PrepareContext has no tensor loader")
        return self.tensor_inputs(name)


class Method:
    """Base class of every method. Subclasses set ``info`` and implement :meth:`merge_tensor`."""

    info: ClassVar[MethodInfo]

    def validate(self, values: Mapping[str, Any] | None = None) -> MethodParams:
        """Parameters with defaults filled; raises ConfigError naming method, parameter and range."""
        return validate_params(self.info, values)

    def check_inputs(self, given: Mapping[str, int]) -> None:
        """Refuse a missing required input, an input this method does not use, or too many of one.

        ``given`` maps each input kind that was given to how many items (e.g. ``{"finetuned": 3}``).
        """
        info = self.info
        for role in sorted(info.single):
            if given.get(role, 0) > 1:
                raise ConfigError(f"method {info.name!r} takes one {role} input, got {given[role]}")
        missing = sorted(info.required - set(given))
        if missing:
            raise ConfigError(
                f"method {info.name!r} needs input(s) {', '.join(missing)} "
                f"(required: {', '.join(sorted(info.required))})"
            )
        for group in info.one_of:
            if not group & set(given):
                raise ConfigError(f"method {info.name!r} needs one of: {', '.join(sorted(group))}")
        unused = sorted(set(given) - info.accepted_inputs)
        if unused:
            raise ConfigError(
                f"method {info.name!r} does not use input(s) {', '.join(unused)} "
                f"(accepted: {', '.join(sorted(info.accepted_inputs))})"
            )

    def check_params_inputs(self, params: Any, given: Mapping[str, int]) -> None:
        """Refuse a parameter value the given inputs cannot serve (e.g. one that needs an optional
        input); called after :meth:`check_inputs`, before any work. The default accepts all."""

    def reference_input(self, given: Mapping[str, int]) -> Role:
        """The dense input whose names/dtypes/aux files define the output."""
        for role in self.info.reference_inputs:
            if role in given:
                return role
        raise ConfigError(
            f"method {self.info.name!r}: none of its reference inputs "
            f"({', '.join(self.info.reference_inputs)}) was given"
        )

    def prepare(self, ctx: PrepareContext) -> Any:
        """Optional whole-model pass before the per-tensor walk; the result becomes ``ctx.state``."""
        return None

    def merge_tensor(self, inputs: TensorInputs, params: Any, ctx: TensorContext) -> torch.Tensor:
        """Compute output tensor ``ctx.name`` (float32 is fine; the engine casts to the output dtype)."""
        raise NotImplementedError

    def extra_tensors(self, ctx: PrepareContext, state: Any) -> dict[str, torch.Tensor]:
        """Tensors the output gains that no input has (e.g. biases a method folds a steering vector
        into); written after the walk. Optional; the default adds none."""
        return {}

    def config_updates(self, ctx: PrepareContext, state: Any) -> dict[str, Any]:
        """Keys to set in the output's config.json (e.g. ``mlp_bias: true`` for new biases). Optional."""
        return {}

    #: set True in factor-space methods that implement :meth:`emit_adapter`
    supports_adapter_output: ClassVar[bool] = False

    def emit_adapter(self, ctx: PrepareContext, state: Any) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Factor-space output: ``{base weight name: (A [r, in], B [out, r])}`` written as a PEFT adapter
        (with the input adapter's config) when ``MergeSpec(output="adapter")``; optional."""
        raise ConfigError(f"method {self.info.name!r} cannot write a LoRA adapter; use dense output")


#: ``fn(inputs, ctx, **params) -> tensor``: the per-tensor function behind a :func:`method_from_function`
TensorFunction = Callable[..., torch.Tensor]


def params_from_signature(fn: TensorFunction, model_name: str) -> type[MethodParams]:
    """A :class:`MethodParams` model from ``fn``'s keyword-only parameters (annotation + default each;
    ``Annotated[float, Field(ge=0)]`` carries ranges), so a function states its parameters once."""
    fields: dict[str, Any] = {}
    for parameter in inspect.signature(fn, eval_str=True).parameters.values():  # resolves string annotations
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        if parameter.annotation is inspect.Parameter.empty:
            raise ConfigError(
                f"method function {fn.__qualname__}: parameter {parameter.name!r} needs a type annotation"
            )
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (parameter.annotation, default)
    if not fields:
        return NoParams
    model: type[MethodParams] = create_model(model_name, __base__=MethodParams, **fields)
    return model


def method_from_function(fn: TensorFunction, info: MethodInfo) -> type[Method]:
    """A :class:`Method` subclass whose ``merge_tensor`` calls ``fn(inputs, ctx, **params)``; with
    ``info.params`` left at ``NoParams`` the parameters come from ``fn``'s signature."""
    if info.params is NoParams:
        class_params = params_from_signature(fn, f"{info.name}_params")
        info = dataclasses.replace(info, params=class_params)
    positional = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) != 2:
        raise ConfigError(
            f"method function {fn.__qualname__}: expected fn(inputs, ctx, *, param=default, ...), "
            f"got positional parameters {[p.name for p in positional]}"
        )

    def merge_tensor(self: Method, inputs: TensorInputs, params: MethodParams, ctx: TensorContext) -> torch.Tensor:
        return fn(inputs, ctx, **dict(params))

    class_name = "".join(part.capitalize() for part in info.name.split("_")) or "FunctionMethod"
    return type(
        class_name,
        (Method,),
        {"info": info, "merge_tensor": merge_tensor, "__doc__": fn.__doc__, "__module__": fn.__module__},
    )
