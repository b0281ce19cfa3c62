"""Manifests of zoo artifacts and `realign zoo verify`: every shipped file is named with its sha256."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.checkpoints import atomic_write_text
from harness.core.errors import CheckpointError, ConfigError
from harness.core.hashing import sha256_file

from ._recipe import Recipe, load_recipe

MANIFEST = "manifest.json"
RECIPE_FILE = "recipe.yaml"
ARTIFACT_FORMAT = "realign-zoo-artifact/1"
ZOO_FORMAT = "realign-zoo/1"


def write_json_atomic(path: Path, value: Any) -> None:
    """A manifest: indented, sorted, UTF-8 as is, newline-terminated (the shipped manifests' bytes)."""
    atomic_write_text(path, json.dumps(value, indent=1, ensure_ascii=False, sort_keys=True) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: manifest not found") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable manifest ({exc})") from exc
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: manifest must be a JSON object")
    return value


def stage_dirs(out: Path) -> list[Path]:
    """Artifact directories under ``out`` (shipped ones and those under unshipped/)."""
    found = []
    for parent in (out, out / "unshipped"):
        if parent.is_dir():
            found += [d for d in sorted(parent.iterdir()) if d.is_dir() and (d / MANIFEST).is_file()]
    return found


def write_top_manifest(out: Path, recipe: Recipe, recipe_text: str) -> Path:
    """(Re)write ``out/manifest.json`` from the recipe copy and the stage manifests now on disk."""
    recipe_file = out / RECIPE_FILE
    if not recipe_file.exists() or recipe_file.read_text(encoding="utf-8") != recipe_text:
        atomic_write_text(recipe_file, recipe_text)
    previous = read_json(out / MANIFEST) if (out / MANIFEST).is_file() else {}
    stages: dict[str, Any] = {}
    shipped = 0
    for directory in stage_dirs(out):
        manifest = read_json(directory / MANIFEST)
        if manifest.get("recipe", {}).get("hash") != recipe.hash:
            continue  # left over from another recipe version: not part of this zoo
        size = sum((directory / name).stat().st_size for name in manifest.get("files", {}))
        is_shipped = directory.parent == out
        shipped += size if is_shipped else 0
        stages[manifest["stage"]] = {
            "dir": str(directory.relative_to(out)),
            "shipped": is_shipped,
            "bytes": size,
            "manifest_sha256": sha256_file(directory / MANIFEST),
        }
    top = {
        "format": ZOO_FORMAT,
        "recipe": {"name": recipe.name, "hash": recipe.hash, "file": RECIPE_FILE, "sha256": sha256_file(recipe_file)},
        "base": recipe.base,
        "stages": stages,
        "shipped_bytes": shipped,
        "size_budget_mb": recipe.size_budget_mb,
        "measurements": previous.get("measurements", {})
        if previous.get("recipe", {}).get("hash") == recipe.hash
        else {},
    }
    write_json_atomic(out / MANIFEST, top)
    return out / MANIFEST


@dataclass
class VerifyReport:
    root: Path
    checked_files: int = 0
    stages: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    shipped_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(out: str | Path, *, raise_on_error: bool = True) -> VerifyReport:
    """Recompute the sha256 of every file the manifests name and check the manifests agree.

    Checks: the recipe copy's hash and content hash, each stage manifest's hash, each artifact
    file's hash, that every stage belongs to the same recipe, and the shipped-size budget.
    """
    root = Path(out)
    report = VerifyReport(root)
    top = read_json(root / MANIFEST)
    if top.get("format") != ZOO_FORMAT:
        raise CheckpointError(f"{root / MANIFEST}: format {top.get('format')!r}, expected {ZOO_FORMAT!r}")
    recipe_info = top.get("recipe", {})
    recipe_file = root / str(recipe_info.get("file", RECIPE_FILE))
    if not recipe_file.is_file():
        report.problems.append(f"{recipe_file}: recipe copy missing")
    else:
        report.checked_files += 1
        if sha256_file(recipe_file) != recipe_info.get("sha256"):
            report.problems.append(f"{recipe_file}: sha256 differs from the manifest")
        try:
            if load_recipe(recipe_file).hash != recipe_info.get("hash"):
                report.problems.append(
                    f"{recipe_file}: recipe hash differs from the manifest's {recipe_info.get('hash')}"
                )
        except ConfigError as exc:
            report.problems.append(str(exc))
    for name, entry in sorted(top.get("stages", {}).items()):
        directory = root / entry["dir"]
        if not entry.get("shipped", True) and not directory.exists():
            continue  # an unshipped artifact (e.g. full weights) is not in a clone; nothing to check
        report.stages.append(name)
        manifest_path = directory / MANIFEST
        if not manifest_path.is_file():
            report.problems.append(f"{manifest_path}: stage manifest missing")
            continue
        report.checked_files += 1
        if sha256_file(manifest_path) != entry.get("manifest_sha256"):
            report.problems.append(f"{manifest_path}: sha256 differs from {root / MANIFEST}")
        manifest = read_json(manifest_path)
        if manifest.get("recipe", {}).get("hash") != recipe_info.get("hash"):
            report.problems.append(f"{manifest_path}: built by recipe {manifest.get('recipe')}, not {recipe_info}")
        if not manifest.get("data"):
            report.problems.append(f"{manifest_path}: names no data files")
        for file_name, digest in sorted(manifest.get("files", {}).items()):
            path = directory / file_name
            if not path.is_file():
                report.problems.append(f"{path}: listed in the manifest but missing")
                continue
            report.checked_files += 1
            if sha256_file(path) != digest:
                report.problems.append(f"{path}: sha256 differs from the manifest (file changed or corrupted)")
            if entry.get("shipped"):
                report.shipped_bytes += path.stat().st_size
    budget = float(top.get("size_budget_mb", 0)) * 1e6
    if budget and report.shipped_bytes > budget:
        report.problems.append(
            f"shipped artifacts total {report.shipped_bytes / 1e6:.1f} MB, over the {budget / 1e6:.0f} MB budget"
        )
    if raise_on_error and report.problems:
        raise CheckpointError(f"zoo verify failed for {root}:\n  " + "\n  ".join(report.problems))
    return report
