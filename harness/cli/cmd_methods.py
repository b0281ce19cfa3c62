"""`realign methods list|show` — the registered realignment/merging methods."""

from __future__ import annotations

from typing import Any

import click

from realign_methods import METHODS, get_method, list_methods, parameter_ranges
from realign_methods.calibration import DEFAULT_SETS


@click.group("methods")
def methods_group() -> None:
    """List registered methods or show one method's parameters, inputs and reference."""


@methods_group.command("list")
def list_command() -> None:
    """One row per method: inputs, data-free or not, summary."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="realign methods")
    for column in ("method", "aliases", "inputs", "data-free", "summary"):
        table.add_column(column)
    for info in list_methods():
        table.add_row(
            info.name,
            ", ".join(METHODS.aliases_of(info.name)),
            escape(_inputs_text(info)),
            "yes" if info.data_free else "no",
            info.summary,
        )
    Console().print(table)


def _inputs_text(info: Any) -> str:
    parts = sorted(info.required)
    parts += [" | ".join(sorted(group)) for group in info.one_of]
    parts += [f"[{name}]" for name in sorted(info.optional)]
    return ", ".join(parts)


@methods_group.command("show")
@click.argument("name")
def show_command(name: str) -> None:
    """Parameters (default, allowed range), required inputs, data-free, paper reference of NAME."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    info = get_method(name).info
    console = Console()
    console.print(f"[bold]{info.name}[/bold]: {info.summary}")
    console.print(escape(f"inputs: {_inputs_text(info)}  (| = one of, [x] = optional)"), highlight=False)
    console.print(f"data-free: {'yes' if info.data_free else 'no'}")
    if info.settings:
        console.print(escape(f"defined for: {info.settings}"), highlight=False)
    for line in _calibration_lines(info):
        console.print(escape(line), highlight=False)
    console.print(escape(f"reference: {info.reference or '-'}"), highlight=False)
    ranges = parameter_ranges(info.params)
    table = Table(title="parameters")
    for column in ("name", "default", "allowed", "description"):
        table.add_column(column)
    for field_name, field in info.params.model_fields.items():
        table.add_row(field_name, repr(field.default), ranges.get(field_name, ""), field.description or "")
    if info.params.model_fields:
        console.print(table)
    else:
        console.print("parameters: none")


def _calibration_lines(info: Any) -> list[str]:
    """The calibration stage's data needs, default set and split (methods that declare one)."""
    spec = info.calibration
    if spec is None:
        return []
    default = DEFAULT_SETS.get(spec.data)
    return [
        f"calibration: {', '.join(sorted(spec.statistics))} of the {spec.model} model on {spec.data} data "
        f"({spec.examples} examples × ≤ {spec.max_length} tokens by default)",
        f"calibration set: {default[0] + ' under the data dir' if default else 'none by default: pass --calibration-data'}",
        f"calibration split: {default[1] if default else '-'}; disjoint from every benchmark (none reads this file)",
    ]
