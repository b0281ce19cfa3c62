"""The lazily loaded `realign` command table: listing is import-free and matches the commands."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.cli._main import COMMANDS, cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_declared_short_help_is_the_commands_own(name: str) -> None:
    command = COMMANDS[name].load()
    assert command.name == name
    assert COMMANDS[name].short_help == command.get_short_help_str(limit=300)


def test_help_imports_no_command_module() -> None:
    probe = (
        "import sys; from harness.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('harness.cli.cmd_') or m in ('torch', 'leaderboards')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "Commands:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_invoking_a_command_loads_only_it() -> None:
    assert sorted(cli.list_commands(None)) == sorted(COMMANDS)  # type: ignore[arg-type]
    assert cli.get_command(None, "methods") is COMMANDS["methods"].load()  # type: ignore[arg-type]
    assert cli.get_command(None, "no-such-command") is None  # type: ignore[arg-type]
