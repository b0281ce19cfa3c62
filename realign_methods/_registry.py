"""The method registry (built-ins from ``realign_methods.methods``, plugins via ``realign.methods``)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from harness.core.errors import ConfigError
from harness.core.registry import Registry
from realign_methods._method import Method, MethodInfo

METHODS: Registry[type[Method]] = Registry("method", "realign.methods")
_builtins_loaded = False


def register_method(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: ``@register_method("resta")``. The name must equal ``cls.info.name``."""

    def decorator(cls: type[Method]) -> type[Method]:
        if getattr(cls, "info", None) is None or cls.info.name != name:
            raise ConfigError(f"method class {cls.__name__}: info.name must be {name!r}")
        return METHODS.add(name, cls, aliases=aliases)

    return decorator


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


def get_method(name: str) -> Method:
    """A fresh instance of the method registered as ``name`` (or an alias); near names suggested."""
    load_builtin_methods()
    entry = METHODS.get(name)
    if isinstance(entry, Method):
        return entry
    if isinstance(entry, type) and issubclass(entry, Method):
        return entry()
    raise ConfigError(f"method {name!r} is registered as {entry!r}, which is not a realign_methods.Method")


def list_methods() -> list[MethodInfo]:
    """``MethodInfo`` of every registered method, by name."""
    load_builtin_methods()
    return [get_method(name).info for name in METHODS.names()]
