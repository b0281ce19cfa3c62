"""Options shared by the commands that read a benchmark: ``--data`` and ``--field FIELD=COLUMN``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from benchmarks import get_benchmark
from harness.core.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])

FIELD_HELP = (
    "Map an item field to your file's column, repeatable: --field prompt=Behavior --field "
    "context=ContextString (--field metadata=COL keeps COL in the item). Columns named prompt, "
    "category, id, language, reference, subcategory or context need no mapping."
)


def _data(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    # The deprecated --data-path may have been parsed first (click parses in command-line order).
    old = ctx.params.get("data_path")
    if value is not None and old is not None and old != value:
        raise click.BadParameter("give --data once (--data-path is its old name)", ctx=ctx)
    return value if value is not None else old


def _data_path(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    click.echo("warning: --data-path is deprecated; use --data (same meaning)", err=True)
    current = ctx.params.get("data_path")
    if current is not None and current != value:
        raise click.BadParameter("give --data once (--data-path is its old name)", ctx=ctx)
    ctx.params["data_path"] = value


def data_option(
    help_text: str = "Benchmark data file or folder (overrides where the data resolves).",
) -> Callable[[F], F]:
    """``--data PATH`` (parameter ``data_path``), with the old ``--data-path`` as a hidden, warning alias."""

    def decorator(fn: F) -> F:
        path = click.Path(exists=True, path_type=str)
        fn = click.option(
            "--data-path",
            "data_path_deprecated",
            type=path,
            default=None,
            hidden=True,
            expose_value=False,
            callback=_data_path,
        )(fn)
        return click.option("--data", "data_path", type=path, default=None, callback=_data, help=help_text)(fn)

    return decorator


def field_option(fn: F) -> F:
    """``--field FIELD=COLUMN`` (parameter ``fields``), repeatable."""
    return click.option("--field", "fields", multiple=True, metavar="FIELD=COLUMN", help=FIELD_HELP)(fn)


def parse_pairs(values: tuple[str, ...], flag: str, shape: str, example: str) -> list[tuple[str, str]]:
    """``KEY=VALUE`` option values, stripped; anything else is refused naming the flag, e.g.
    ``parse_pairs(values, "--column", "FIELD=COLUMN", "response=answer")``."""
    pairs = []
    for value in values:
        key, sep, right = (part.strip() for part in value.partition("="))
        if not sep or not key or not right:
            raise ConfigError(f"{flag} {value!r}: expected {shape}, e.g. {flag} {example}")
        pairs.append((key, right))
    return pairs


def parse_fields(values: tuple[str, ...]) -> dict[str, Any]:
    """``--field`` values as a column mapping for ``get_benchmark(name, **mapping)``; ``metadata``
    may repeat (each adds a column). Unknown fields are refused by the benchmark, with a did-you-mean."""
    mapping: dict[str, Any] = {}
    for key, column in parse_pairs(values, "--field", "FIELD=COLUMN", "prompt=Behavior"):
        if key == "metadata":
            mapping.setdefault("metadata", []).append(column)
        elif key in mapping and mapping[key] != column:
            raise ConfigError(f"--field {key}=...: given twice ({mapping[key]!r} and {column!r})")
        else:
            mapping[key] = column
    return mapping


def load_benchmark(name: str, fields: tuple[str, ...]) -> Any:
    """The benchmark named (or the YAML spec at that path) with the ``--field`` mapping applied."""
    return get_benchmark(name, **parse_fields(fields))


def items_path(generations: str | Path) -> Path:
    """Where `realign generate` leaves the items it answered, next to the generations file
    (``gens.jsonl`` -> ``gens.items.jsonl``): judges read their prompts from there."""
    path = Path(generations)
    return path.with_name(path.name.removesuffix(".jsonl") + ".items.jsonl")
