"""The benchmark registry: built-in specs (loaded on first use), entry points, and specs given by path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from benchmarks._benchmark import Benchmark
from benchmarks._spec import BenchmarkSpec, FieldMap, SourceSpec
from harness.core.errors import ConfigError, name_unknown
from harness.core.registry import Registry
from harness.core.yaml_strict import load_yaml


def load_builtin_benchmarks() -> None:
    """Register the specs shipped in ``benchmarks/specs`` (run by the registry on first use, not at import)."""
    for entry in sorted(resources.files("benchmarks.specs").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = load_yaml(entry.read_text(encoding="utf-8"), f"benchmarks/specs/{entry.name}")
            BENCHMARKS.add(
                data["name"], Benchmark(BenchmarkSpec.model_validate(data)), source=f"benchmarks/specs/{entry.name}"
            )


BENCHMARKS: Registry[Benchmark] = Registry("benchmark", "realign.benchmarks", builtins=load_builtin_benchmarks)


def load_spec(path_or_text: str | Path) -> Benchmark:
    """A Benchmark from a YAML spec file (user benchmarks need no code); its relative source paths
    resolve next to the file first."""
    path = Path(path_or_text)
    if not path.is_file():
        raise ConfigError(f"benchmark spec {path}: file not found")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"), str(path))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read benchmark spec ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: a benchmark spec is a mapping (name, kind, sources, fields ...), got {type(data).__name__}"
        )
    try:
        return Benchmark(BenchmarkSpec.model_validate(data), path.resolve())
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                loc = err["loc"]
                models: dict[str, type[BaseModel]] = {"fields": FieldMap, "sources": SourceSpec}
                parent = models.get(str(loc[0]), BenchmarkSpec) if len(loc) > 1 else BenchmarkSpec
                lines.append(
                    f"{'.'.join(map(str, loc[:-1])) or '(top level)'}: unknown key "
                    f"{name_unknown([str(loc[-1])], list(parent.model_fields))}"
                )
            else:
                lines.append(f"{where}: {str(err['msg']).removeprefix('Value error, ')}")
        raise ConfigError(f"{path}: invalid benchmark spec: " + "; ".join(lines)) from None


def is_spec_path(name: str | Path) -> bool:
    """Whether a benchmark reference names a YAML spec file rather than a registered benchmark."""
    return str(name).endswith((".yaml", ".yml"))


def get_benchmark(name: str | Path, **fields: Any) -> Benchmark:
    """A registered benchmark (or a YAML spec path); keyword args override its column mapping."""
    if is_spec_path(name):
        bench = load_spec(name)
    else:
        entry: Any = BENCHMARKS.get(str(name))
        bench = (
            entry
            if isinstance(entry, Benchmark)
            else (Benchmark(entry) if isinstance(entry, BenchmarkSpec) else entry())
        )
    return bench.with_fields(**fields) if fields else bench


def list_benchmarks() -> list[str]:
    return BENCHMARKS.names()
