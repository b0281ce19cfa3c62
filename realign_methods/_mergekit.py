"""Read a mergekit YAML config (``merge_method``, ``base_model``, ``models``, ``parameters``, ``dtype``)
as MergeSpec fields for the matching mergekit-semantics variant (``ties`` → ``ties_mergekit``, …).

Only what maps exactly is accepted: scalar per-model ``weight``/``density`` and the shared
``normalize``/``rescale``/``lambda``; ``int8_mask`` (a mask dtype, no effect on values in float32)
and tokenizer/name fields are ignored with a warning; anything else (slices, gradients, filters,
other methods) is refused naming the field. Arithmetic is float32 whatever ``dtype`` says; the
output is written in ``out_dtype`` or else ``dtype``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.core.errors import ConfigError
from harness.core.yaml_strict import load_yaml

#: mergekit merge_method → our variant
MERGEKIT_METHODS = {
    "linear": "weight_average",
    "task_arithmetic": "task_arithmetic_mergekit",
    "ties": "ties_mergekit",
    "dare_ties": "dare_ties_mergekit",
    "dare_linear": "dare_linear_mergekit",
}
_TOP_LEVEL = frozenset({"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype"})
_IGNORED_TOP_LEVEL = frozenset({"tokenizer_source", "tokenizer", "chat_template", "name"})
_SHARED = {"normalize": "normalize", "rescale": "rescale", "lambda": "lam"}
_PER_MODEL = frozenset({"weight", "density"})
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def mergekit_fields(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """MergeSpec fields (all but ``out``) for the mergekit config at ``path``, and warnings."""
    source = f"--mergekit-config {path}"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read YAML ({exc})") from exc
    config = load_yaml(text, source)
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a mapping with merge_method, base_model and models")
    warnings: list[str] = []
    for key in config:
        if key in _IGNORED_TOP_LEVEL:
            warnings.append(f"{source}: field {key!r} is ignored (tokenizer and card files come from the first input)")
        elif key not in _TOP_LEVEL:
            raise ConfigError(f"{source}: field {key!r} is not supported (supported: {', '.join(sorted(_TOP_LEVEL))})")
    method = config.get("merge_method")
    if method not in MERGEKIT_METHODS:
        raise ConfigError(
            f"{source}: merge_method {method!r} is not supported (supported: {', '.join(MERGEKIT_METHODS)})"
        )
    shared = _mapping(config.get("parameters"), f"{source}: parameters")
    params: dict[str, Any] = {}
    defaults: dict[str, float] = {}
    for key, value in shared.items():
        if key == "int8_mask":
            warnings.append(f"{source}: parameters.int8_mask is ignored (the agreement mask is exact in float32)")
        elif key in _SHARED and method != "linear":
            params[_SHARED[key]] = _scalar(value, f"{source}: parameters.{key}", bool if key != "lambda" else float)
        elif key == "normalize" and method == "linear":
            if _scalar(value, f"{source}: parameters.normalize", bool) is not True:
                raise ConfigError(f"{source}: parameters.normalize: linear is supported with normalize: true only")
        elif key in _PER_MODEL:
            defaults[key] = float(_scalar(value, f"{source}: parameters.{key}", float))
        else:
            allowed = ["normalize", "int8_mask", "weight", "density"] + (
                [] if method == "linear" else ["rescale", "lambda"]
            )
            raise ConfigError(
                f"{source}: parameters.{key} is not supported for {method} (supported: {', '.join(allowed)})"
            )
    base = config.get("base_model")
    if method != "linear" and not isinstance(base, str):
        raise ConfigError(f"{source}: base_model: {method} needs the base model's path (got {base!r})")
    models = config.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{source}: models: expected a non-empty list of {{model: PATH, parameters: {{...}}}}")
    paths, weights, densities = [], [], []
    for index, entry in enumerate(models):
        where = f"{source}: models[{index}]"
        entry = _mapping(entry, where)
        unknown = sorted(set(entry) - {"model", "parameters"})
        if unknown:
            raise ConfigError(f"{where}: field {unknown[0]!r} is not supported (supported: model, parameters)")
        model = entry.get("model")
        if not isinstance(model, str):
            raise ConfigError(f"{where}.model: expected a model path, got {model!r}")
        per_model = _mapping(entry.get("parameters"), f"{where}.parameters")
        for key in per_model:
            if key not in _PER_MODEL:
                raise ConfigError(f"{where}.parameters.{key} is not supported (supported: weight, density)")
        if method != "linear" and model == base:
            continue  # mergekit merges the base's task vector (zero) in no way: it is the anchor
        values = {k: float(_scalar(v, f"{where}.parameters.{k}", float)) for k, v in per_model.items()}
        values = {**defaults, **values}
        if "weight" not in values:
            raise ConfigError(f"{where}.parameters.weight is required (mergekit {method} has no default weight)")
        paths.append(model)
        weights.append(values["weight"])
        densities.append(values.get("density", 1.0))
    if not paths:
        raise ConfigError(f"{source}: models: no model besides base_model {base!r} to merge")
    fields: dict[str, Any] = {"method": MERGEKIT_METHODS[method], "finetuned": paths}
    if method == "linear":
        # Σ w_i·θ_i / Σ w_i, written as anchor + weighted mean of (θ_i − anchor) with the first model as anchor
        fields["aligned"] = paths[0]
        params = {"weights": weights}
    else:
        fields["base"] = base
        params |= {"weights": weights}
        if method != "task_arithmetic":
            params["density"] = densities
        elif any(d != 1.0 for d in densities):
            raise ConfigError(f"{source}: models[*].parameters.density: task_arithmetic does not sparsify")
    fields["params"] = params
    dtype = config.get("out_dtype", config.get("dtype"))
    if dtype is not None:
        if dtype not in _DTYPES:
            raise ConfigError(f"{source}: dtype {dtype!r} is not supported (supported: {', '.join(_DTYPES)})")
        fields["dtype"] = _DTYPES[dtype]
    return fields, warnings


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _scalar(value: Any, where: str, kind: type) -> Any:
    """A plain number/bool: mergekit's per-layer gradients (lists) and filters (mappings) are refused."""
    ok = isinstance(value, bool) if kind is bool else isinstance(value, int | float) and not isinstance(value, bool)
    if not ok:
        what = "a boolean" if kind is bool else "a number (per-layer gradients and filters are not supported)"
        raise ConfigError(f"{where}: expected {what}, got {value!r}")
    return value
