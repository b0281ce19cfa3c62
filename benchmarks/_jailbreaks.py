"""Jailbreak templates (``benchmarks/jailbreaks/<name>.txt``, provenance beside them) wrapped around a
benchmark's questions: a spec's ``jailbreaks:`` turns each item into one item per template."""

from __future__ import annotations

from functools import cache
from importlib import resources

from harness.core.errors import ConfigError, DataError, name_unknown

PLACEHOLDER = "[INSERT PROMPT HERE]"  # GPTFuzz's marker, kept so the files stay byte-identical upstream


def jailbreak_names() -> list[str]:
    """The shipped templates, by file stem."""
    folder = resources.files("benchmarks") / "jailbreaks"
    return sorted(e.name.removesuffix(".txt") for e in folder.iterdir() if e.name.endswith(".txt"))


@cache
def jailbreak_template(name: str) -> str:
    """The text of template ``name``; exactly one placeholder, or a DataError naming the file."""
    names = jailbreak_names()
    if name not in names:
        raise ConfigError(f"unknown jailbreak template {name_unknown([name], names)}; known: {', '.join(names)}")
    path = resources.files("benchmarks") / "jailbreaks" / f"{name}.txt"
    text = path.read_text(encoding="utf-8")
    if text.count(PLACEHOLDER) != 1:
        raise DataError(
            f"benchmarks/jailbreaks/{name}.txt: expected the placeholder {PLACEHOLDER} exactly once, "
            f"found it {text.count(PLACEHOLDER)} times"
        )
    return text


def apply_jailbreak(name: str, question: str) -> str:
    """``question`` inside template ``name``."""
    return jailbreak_template(name).replace(PLACEHOLDER, question)
