"""One generic name -> component registry, shared by methods, benchmarks and judges.

It refuses duplicate names, suggests near names for unknown ones, and lazily discovers
third-party components through a setuptools entry-point group. Entry points go through the same
``check`` as built-ins, and a plugin whose name is already taken (by a built-in or another plugin)
is refused with both sources named rather than silently shadowed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from harness.core.errors import ConfigError, did_you_mean

T = TypeVar("T")

#: ``check(name, item) -> item``: refuses (ConfigError) an item that is not what the registry holds
Check = Callable[[str, object], T]


def _entry_point_source(ep: EntryPoint) -> str:
    dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
    return f"entry point {ep.name} = {ep.value} (group {ep.group}, distribution {dist})"


class Registry(Generic[T]):
    def __init__(
        self,
        kind: str,
        entry_point_group: str | None = None,
        check: Check[T] | None = None,
        builtins: Callable[[], None] | None = None,
    ) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self.check = check
        #: registers the built-ins; run before any entry point so a name clash names the built-in
        self.builtins = builtins
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._sources: dict[str, str] = {}
        self._entry_points_loaded = False

    def add(self, name: str, item: T, *, aliases: tuple[str, ...] = (), source: str | None = None) -> T:
        """Register ``item`` as ``name``; ``source`` says where it comes from (for conflict messages)."""
        if source is None:
            source = f"{getattr(item, '__module__', '?')}.{getattr(item, '__qualname__', type(item).__qualname__)}"
        for key in (name, *aliases):
            if key in self._items or key in self._aliases:
                owner = self._aliases.get(key, key)
                raise ConfigError(
                    f"{self.kind} {key!r} is already registered by {self._sources.get(owner, '?')}; "
                    f"refusing the second registration from {source}"
                )
        if self.check is not None:
            item = self.check(name, item)
        self._items[name] = item
        self._sources[name] = source
        for alias in aliases:
            self._aliases[alias] = name
        return item

    def register(self, name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def decorator(item: T) -> T:
            return self.add(name, item, aliases=aliases)

        return decorator

    def source(self, name: str) -> str:
        """Where the component registered as ``name`` (or an alias of it) comes from."""
        self.get(name)
        return self._sources[self._aliases.get(name, name)]

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.entry_point_group is None:
            return
        self._entry_points_loaded = True
        if self.builtins is not None:
            self.builtins()
        for ep in entry_points(group=self.entry_point_group):
            source = _entry_point_source(ep)
            if ep.name in self._items or ep.name in self._aliases:  # before importing the plugin
                owner = self._aliases.get(ep.name, ep.name)
                raise ConfigError(
                    f"{self.kind} {ep.name!r} is registered twice: by {self._sources[owner]} and by {source}; "
                    "uninstall or rename one of them"
                )
            try:
                item = ep.load()
            except Exception as exc:  # a broken plugin must say which one it is
                raise ConfigError(f"{self.kind} {ep.name!r}: cannot load {source}: {exc}") from exc
            self.add(ep.name, item, source=source)

    def get(self, name: str) -> T:
        self._load_entry_points()
        canonical = self._aliases.get(name, name)
        if canonical in self._items:
            return self._items[canonical]
        hint = did_you_mean(name, self.names(include_aliases=True), n=3, cutoff=0.5)
        hint = f"; {hint}" if hint else ""
        raise ConfigError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})")

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
