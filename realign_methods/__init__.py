"""Realignment methods: tensor ops, the method registry, each method, the streaming merge engine.

>>> from realign_methods import get_method, MergeSpec, merge
>>> merge(MergeSpec(method="resta", aligned=A, unaligned=U, finetuned=[F], out=O, params={"gamma": 0.5}))
"""

from realign_methods._engine import MergePlan, MergeSpec, merge, plan, resolve_device
from realign_methods._mergekit import MERGEKIT_METHODS, mergekit_fields
from realign_methods._method import (
    DENSE_INPUTS,
    AdapterParams,
    Method,
    MethodInfo,
    MethodParams,
    NoParams,
    PrepareContext,
    Role,
    TensorContext,
    TensorInputs,
    method_from_function,
    parameter_ranges,
    params_from_signature,
    tensor_seed,
    validate_params,
)
from realign_methods._registry import (
    METHODS,
    check_method,
    get_method,
    list_methods,
    load_builtin_methods,
    register_method,
    tensor_method,
)

__all__ = [
    "DENSE_INPUTS",
    "MERGEKIT_METHODS",
    "METHODS",
    "AdapterParams",
    "MergePlan",
    "MergeSpec",
    "Method",
    "MethodInfo",
    "MethodParams",
    "NoParams",
    "PrepareContext",
    "Role",
    "TensorContext",
    "TensorInputs",
    "check_method",
    "get_method",
    "list_methods",
    "load_builtin_methods",
    "merge",
    "mergekit_fields",
    "method_from_function",
    "parameter_ranges",
    "params_from_signature",
    "plan",
    "register_method",
    "resolve_device",
    "tensor_method",
    "tensor_seed",
    "validate_params",
]
