"""Content hashes of input models, memoised by (path, size, mtime) so a re-run does not re-read GBs."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from harness.core.checkpoints import atomic_write_json
from harness.core.hashing import hash_value, sha256_file_memo

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_lock = threading.Lock()


class HashCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, str] = {}
        if path.is_file():
            try:
                self._entries = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                self._entries = {}  # a damaged memo only costs re-hashing
        self._dirty = False

    def file_hash(self, file: Path) -> str:
        st = file.stat()
        key = f"{file.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        with _lock:
            if key not in self._entries:
                self._entries[key] = sha256_file_memo(file)
                self._dirty = True
            return self._entries[key]

    def dir_hash(self, directory: Path) -> str:
        """Hash of a model or adapter directory: weights by content, small JSON/config files too."""
        if directory.is_file():
            return self.file_hash(directory)
        parts = {}
        for file in sorted(directory.iterdir()):
            if file.is_file() and (file.suffix in _WEIGHT_SUFFIXES or file.suffix in (".json", ".jinja", ".model")):
                parts[file.name] = self.file_hash(file)
        return hash_value(parts, length=32)

    def save(self) -> None:
        if not self._dirty:
            return
        atomic_write_json(self.path, self._entries)
        self._dirty = False
