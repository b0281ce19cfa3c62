from __future__ import annotations

import importlib
import logging
import pkgutil
import sys

import click

from harness.core.errors import RealignError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Realign Bench: compare safety-realignment methods for fine-tuned LLMs."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    import harness.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("cmd_"):
            module = importlib.import_module(f"harness.cli.{info.name}")
            module.register(cli)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Entry point: RealignError becomes a one-line message and exit code 2, never a traceback."""
    try:
        # Non-standalone mode returns ctx.exit(N)'s code instead of exiting: pass it on.
        code = cli.main(args=argv, prog_name="realign", standalone_mode=False)
        if isinstance(code, int) and code != 0:
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except RealignError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
