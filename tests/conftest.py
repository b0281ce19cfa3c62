"""Shared fixtures: offline environment, real data dir, tiny random Llamas, the bundled SmolLM2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing may try the hub, in any test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
if "REALIGN_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["REALIGN_DATA_DIR"] = str(SHARED_DATA)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data (``../shared/data`` or $REALIGN_DATA_DIR)."""
    path = Path(os.environ.get("REALIGN_DATA_DIR", SHARED_DATA))
    if not path.is_dir():
        pytest.skip(f"real data not found at {path}; set REALIGN_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def tiny_llama_factory(tmp_path_factory: pytest.TempPathFactory):
    """Build tiny random Llama directories: ``factory(name, **kwargs) -> Path`` (cached per session)."""
    from harness.testing import make_tiny_llama

    root = tmp_path_factory.mktemp("tiny_llamas")
    built: dict[tuple, Path] = {}

    def factory(name: str = "base", **kwargs) -> Path:
        key = (name, tuple(sorted(kwargs.items())))
        if key not in built:
            built[key] = make_tiny_llama(root / f"{name}-{len(built)}", **kwargs)
        return built[key]

    return factory


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled SmolLM2-135M-Instruct, imported once per session from its GGUF to safetensors."""
    from harness.core.checkpoints import import_gguf

    out = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct"
    return import_gguf(out)
