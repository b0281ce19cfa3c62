"""The method registry (built-ins from ``realign_methods.methods``, plugins via ``realign.methods``).

Built-ins and entry-point plugins pass the same check (:func:`check_method`): a :class:`Method`
subclass whose ``info.name`` is the name it is registered under, with the current ``merge_tensor``
signature.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from typing import overload

from harness.core.errors import ConfigError
from harness.core.registry import Registry
from realign_methods._method import Method, MethodInfo, TensorFunction, method_from_function

_builtins_loaded = False


def check_method(name: str, item: object) -> type[Method]:
    """``item`` as a method class registered as ``name``, or a ConfigError saying what is wrong."""
    label = f"method {name!r} ({getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', repr(item))})"
    if not (isinstance(item, type) and issubclass(item, Method)):
        raise ConfigError(f"{label}: expected a subclass of realign_methods.Method, got {item!r}")
    info = getattr(item, "info", None)
    if not isinstance(info, MethodInfo):
        raise ConfigError(f"{label}: class attribute 'info' must be a realign_methods.MethodInfo, got {info!r}")
    if info.name != name:
        raise ConfigError(f"{label}: registered as {name!r} but its info.name is {info.name!r}; they must be equal")
    positional = [
        p.name
        for p in inspect.signature(item.merge_tensor).parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) != 4:  # self, inputs, params, ctx
        raise ConfigError(
            f"{label}: merge_tensor takes {positional[1:]}; expected (inputs, params, ctx) — the tensor name is ctx.name"
        )
    return item


def load_builtin_methods() -> None:
    """Import every module of ``realign_methods.methods`` (each registers itself) once."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import realign_methods.methods as package

    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


METHODS: Registry[type[Method]] = Registry(
    "method", "realign.methods", check=check_method, builtins=load_builtin_methods
)


@overload
def register_method(cls: type[Method], /) -> type[Method]: ...
@overload
def register_method(*, aliases: tuple[str, ...] = ()) -> Callable[[type[Method]], type[Method]]: ...


def register_method(
    cls: type[Method] | None = None, /, *, aliases: tuple[str, ...] = ()
) -> type[Method] | Callable[[type[Method]], type[Method]]:
    """Class decorator registering a method under its ``info.name``: ``@register_method`` or
    ``@register_method(aliases=("x",))``."""

    def decorator(method_class: type[Method]) -> type[Method]:
        if not isinstance(method_class, type):
            raise ConfigError(
                f"register_method: expected a Method subclass, got {method_class!r} "
                "(the name comes from info.name: write @register_method, not @register_method('name'))"
            )
        info = getattr(method_class, "info", None)
        name = info.name if isinstance(info, MethodInfo) else ""
        return METHODS.add(name, method_class, aliases=aliases)

    return decorator if cls is None else decorator(cls)


def tensor_method(info: MethodInfo, *, aliases: tuple[str, ...] = ()) -> Callable[[TensorFunction], TensorFunction]:
    """Register a per-tensor function ``fn(inputs, ctx, *, param=default, ...)`` as a method.

    When ``info.params`` is left at ``NoParams``, the keyword-only parameters of ``fn`` become the
    parameter model (see :func:`realign_methods.params_from_signature`). Returns ``fn`` unchanged.
    """

    def decorator(fn: TensorFunction) -> TensorFunction:
        register_method(aliases=aliases)(method_from_function(fn, info))
        return fn

    return decorator


def get_method(name: str) -> Method:
    """A fresh instance of the method registered as ``name`` (or an alias); near names suggested."""
    load_builtin_methods()
    return METHODS.get(name)()


def list_methods() -> list[MethodInfo]:
    """``MethodInfo`` of every registered method, by name."""
    load_builtin_methods()
    return [get_method(name).info for name in METHODS.names()]
