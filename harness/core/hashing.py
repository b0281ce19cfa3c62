"""Content hashes: canonical JSON of specs (identity and cache key) and sha256 of files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from harness.core.paths import cache_dir

_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal values give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def hash_value(value: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of ``value``, truncated to ``length`` hex digits."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]


def hash_text(text: str, length: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def sha256_file(path: str | Path) -> str:
    """Full sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


#: checked by ``sha256_file_memo``: a file whose size, mtime or inode changed is hashed again
_MEMO_FILE = "file-sha256.sqlite"


def sha256_file_memo(path: str | Path) -> str:
    """``sha256_file(path)``, memoised on disk by (resolved path, size, mtime_ns, inode).

    Merge provenance hashes every input; in a study each fine-tune is merged by every method, and
    hashing is ~1.5 GB/s on one core, so re-hashing unchanged GB-sized shards dominated small merges.
    The memo is SQLite under ``cache_dir()`` (safe across concurrent merges); if it cannot be used
    (read-only home, damaged file) the file is simply hashed.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    memo = cache_dir() / _MEMO_FILE
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(memo, timeout=30)) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS sha256 (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
                "inode INTEGER, digest TEXT)"
            )
            row = db.execute("SELECT size, mtime_ns, inode, digest FROM sha256 WHERE path = ?", key[:1]).fetchone()
            if row is not None and tuple(row[:3]) == key[1:]:
                return str(row[3])
            digest = sha256_file(resolved)
            with db:
                db.execute("INSERT OR REPLACE INTO sha256 VALUES (?, ?, ?, ?, ?)", (*key, digest))
            return digest
    except sqlite3.Error:
        return sha256_file(resolved)
