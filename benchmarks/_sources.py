"""Where a source's data files are: explicit path, the spec's folder, data dirs, cache, pinned download."""

from __future__ import annotations

import glob
import hashlib
import os
import urllib.request
from pathlib import Path

from benchmarks._spec import BenchmarkSpec, SourceSpec
from harness.core.errors import ConfigError, DataError
from harness.core.paths import cache_dir, data_dirs


def _online() -> bool:
    flags = ("REALIGN_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    return not any(os.environ.get(f, "").lower() in ("1", "true", "yes") for f in flags)


def _download(url: str, dest: Path, sha256: str | None) -> Path:
    root = (cache_dir() / "data").resolve()
    if not dest.resolve().is_relative_to(root):  # e.g. a {language} that expands to "../"
        raise DataError(f"{url}: download target {dest} is outside the cache directory {root}; refused")
    if not sha256:
        raise DataError(f"{url}: no sha256 pinned for this download; refused")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response:
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        raise DataError(f"{url}: sha256 {digest} does not match the pinned {sha256}; not saved")
    tmp.write_bytes(payload)
    tmp.replace(dest)
    return dest


def resolve_source(
    spec: BenchmarkSpec,
    source: SourceSpec,
    language: str | None,
    data_path: str | Path | None = None,
    spec_dir: Path | None = None,
) -> list[Path]:
    """Files for one source: explicit path -> the spec file's folder (a spec given by path) ->
    $REALIGN_DATA_DIR -> user cache -> pinned download."""
    rel = source.path.format(language=language or "")
    looked: list[str] = []
    roots: list[Path] = []
    if data_path is not None:
        explicit = Path(data_path)
        if not explicit.exists():
            raise DataError(f"benchmark {spec.name!r}: explicit data path {explicit} does not exist")
        if explicit.is_file():
            if len(spec.sources) <= 1:
                return [explicit]
            raise ConfigError(
                f"benchmark {spec.name!r} reads {len(spec.sources)} source files "
                f"({', '.join(s.path for s in spec.sources)}); data path {explicit} is one file. "
                "Pass a folder holding them (a data root), not a file."
            )
        # A data root holding "<folder>/<file>", or the benchmark folder itself.
        roots += [explicit, explicit.parent] if explicit.is_dir() else []
        looked.append(str(explicit))
    if spec_dir is not None:  # a user spec names its files relative to itself
        roots.append(spec_dir)
    roots += data_dirs()
    for root in roots:
        candidates = (
            sorted(glob.glob(str(root / rel)))
            if glob.has_magic(rel)
            else ([str(root / rel)] if (root / rel).is_file() else [])
        )
        if not candidates and data_path is not None and root == Path(data_path):
            tail = rel.split("/", 1)[-1]
            candidates = (
                sorted(glob.glob(str(root / tail)))
                if glob.has_magic(tail)
                else ([str(root / tail)] if (root / tail).is_file() else [])
            )
        files = [Path(c) for c in candidates if Path(c).name not in source.exclude]
        if files:
            return files
        looked.append(str(root / rel))
    failure = ""
    if source.url and _online():
        try:
            return [_download(source.url, cache_dir() / "data" / rel, source.sha256)]
        except OSError as exc:
            failure = f" Download of {source.url} failed ({exc})."
    how = (
        f"download {source.url} (sha256 {source.sha256}) to {cache_dir() / 'data' / rel}, or go online"
        if source.url
        else "copy the upstream files there (see the benchmark's PROVENANCE)"
    )
    raise DataError(
        f"benchmark {spec.name!r}: data file {rel!r} not found; looked in: {', '.join(looked)}. "
        f"{failure} Set REALIGN_DATA_DIR to a folder holding {rel}, pass an explicit path, or {how}."
    )
