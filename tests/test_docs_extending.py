"""docs/extending.md's bring-your-own-benchmark recipe runs as written: its CSV, spec and Python snippet
are taken from the page, and what the snippet prints is what the page says it prints."""

from __future__ import annotations

import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def _section(title_start: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(title_start)}.*?(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"{DOC}: no section starting '## {title_start}'"
    return match.group(0)


def _block(section: str, language: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```", section, flags=re.S | re.M)
    assert len(blocks) == 1, f"expected one ```{language} block, found {len(blocks)}"
    return blocks[0]


def test_byob_recipe_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = _section("3. A benchmark of your own")
    (tmp_path / "mine.csv").write_text(_block(section, "csv"), encoding="utf-8")
    (tmp_path / "mine.yaml").write_text(_block(section, "yaml"), encoding="utf-8")
    code = _block(section, "python")
    # every print(...) is followed by (or ends its line with) a comment giving the value it prints
    promised = [ast.literal_eval(c) for c in re.findall(r"#\s*(\[.*\])\s*$", code, flags=re.M)]
    assert len(promised) == code.count("print(") == 2
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"{DOC}#benchmark", "exec"), {})
    assert [ast.literal_eval(line) for line in printed.getvalue().splitlines()] == promised
