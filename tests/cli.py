"""Running the `realign` CLI in-process from tests: exit code, stdout and stderr."""

from __future__ import annotations

import pytest

from harness.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``realign ARGV`` in this process; the SystemExit code (0 when it returns) and what it printed."""
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
