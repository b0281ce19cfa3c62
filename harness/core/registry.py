"""One generic name -> component registry, shared by methods, benchmarks and judges.

It refuses duplicate names, suggests near names for unknown ones, and lazily discovers
third-party components through a setuptools entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from harness.core.errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._entry_points_loaded = False

    def add(self, name: str, item: T, *, aliases: tuple[str, ...] = ()) -> T:
        for key in (name, *aliases):
            if key in self._items or key in self._aliases:
                raise ConfigError(f"{self.kind} {key!r} is already registered")
        self._items[name] = item
        for alias in aliases:
            self._aliases[alias] = name
        return item

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorator(item: T) -> T:
            return self.add(name, item, aliases=aliases)

        return decorator

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.entry_point_group is None:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._items or ep.name in self._aliases:
                continue  # a built-in of the same name wins; the plugin is shadowed
            self._items[ep.name] = ep.load()

    def get(self, name: str) -> T:
        self._load_entry_points()
        canonical = self._aliases.get(name, name)
        if canonical in self._items:
            return self._items[canonical]
        hint = did_you_mean(name, self.names(include_aliases=True), n=3, cutoff=0.5)
        hint = f"; {hint}" if hint else ""
        raise ConfigError(
            f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})"
        )

    def canonical_name(self, name: str) -> str:
        self.get(name)
        return self._aliases.get(name, name)

    def names(self, include_aliases: bool = False) -> list[str]:
        self._load_entry_points()
        names = sorted(self._items)
        return sorted([*names, *self._aliases]) if include_aliases else names

    def aliases_of(self, name: str) -> list[str]:
        return sorted(alias for alias, target in self._aliases.items() if target == name)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
