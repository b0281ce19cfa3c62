"""Realignment methods: tensor ops, the method registry, each method, the streaming merge engine.

>>> from realign_methods import get_method, MergeSpec, merge
>>> merge(MergeSpec(method="resta", aligned=A, unaligned=U, finetuned=[F], out=O, params={"gamma": 0.5}))
"""

from realign_methods._engine import MergePlan, MergeSpec, merge, plan, resolve_device
from realign_methods._method import (
    INPUT_KINDS,
    Method,
    MethodInfo,
    MethodParams,
    NoParams,
    PrepareContext,
    TensorContext,
    TensorInputs,
    parameter_ranges,
    tensor_seed,
    validate_params,
)
from realign_methods._registry import METHODS, get_method, list_methods, load_builtin_methods, register_method

__all__ = [
    "INPUT_KINDS",
    "METHODS",
    "MergePlan",
    "MergeSpec",
    "Method",
    "MethodInfo",
    "MethodParams",
    "NoParams",
    "PrepareContext",
    "TensorContext",
    "TensorInputs",
    "get_method",
    "list_methods",
    "load_builtin_methods",
    "merge",
    "parameter_ranges",
    "plan",
    "register_method",
    "resolve_device",
    "tensor_seed",
    "validate_params",
]
