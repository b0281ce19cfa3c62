"""The on-disk sha256 memo that merge provenance and experiment planning read input hashes through."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from harness.core import hashing


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REALIGN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_memo_hashes_once_and_again_when_the_file_changes(tmp_path, cache, monkeypatch):
    file = tmp_path / "w.safetensors"
    file.write_bytes(b"a" * 1000)
    calls = []
    real = hashing.sha256_file
    monkeypatch.setattr(hashing, "sha256_file", lambda p: calls.append(p) or real(p))

    first = hashing.sha256_file_memo(file)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    assert hashing.sha256_file_memo(file) == first and len(calls) == 1  # second read came from the memo

    with open(file, "r+b") as handle:  # same size, same inode: only the mtime tells
        handle.write(b"b")
    stat = file.stat()
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert hashing.sha256_file_memo(file) == hashlib.sha256(b"b" + b"a" * 999).hexdigest()
    assert len(calls) == 2
    rows = sqlite3.connect(cache / "file-sha256.sqlite").execute("SELECT COUNT(*) FROM sha256").fetchone()
    assert rows == (1,)


def test_memo_falls_back_to_hashing_when_the_memo_is_damaged(tmp_path, cache):
    cache.mkdir()
    (cache / "file-sha256.sqlite").write_bytes(b"not a database, just junk " * 40)
    file = tmp_path / "w.bin"
    file.write_bytes(b"xyz")
    assert hashing.sha256_file_memo(file) == hashlib.sha256(b"xyz").hexdigest()
