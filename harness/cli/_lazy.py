"""A click group whose commands live in modules imported only when a command is used.

``realign --help`` lists the commands from the short help declared here, so it imports no command
module (and none of the project or torch behind them); invoking a command, or asking for its own
help, imports just that command's module. ``tests/harness/test_cli_lazy.py`` checks that each
declared short help matches the command's docstring.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import click


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives (``module:attribute``) and its one-line help for the group listing."""

    target: str
    short_help: str

    def load(self) -> click.Command:
        module_name, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.target} is a {type(command).__name__}, expected a click command")
        return command


class LazyGroup(click.Group):
    """A ``click.Group`` resolving its ``lazy_commands`` on first use (click's documented LazyGroup pattern)."""

    def __init__(self, *args: object, lazy_commands: dict[str, LazyCommand], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            self.add_command(self.lazy_commands[cmd_name].load(), cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command table from the declared short help: listing commands imports none of them."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(name) for name in names), default=0)
        rows = []
        for name in names:
            if name in self.commands:
                command = self.commands[name]
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(limit)))
            else:
                # click's own truncation, applied to the declared text
                rows.append(
                    (name, click.Command(name, help=self.lazy_commands[name].short_help).get_short_help_str(limit))
                )
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
