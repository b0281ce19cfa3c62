"""Benchmark items -> generations.jsonl: chat prompts, provenance hashes, batched appends, resume."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import build_chat_prompt
from harness.core.checkpoints import checkpoint_hash
from harness.core.errors import ConfigError, DataError
from harness.core.hashing import hash_text, hash_value
from harness.core.records import GenerationRecord, Item, append_jsonl, iter_jsonl_tolerant
from harness.generate._adapter import adapter_hash
from harness.generate._backend import Backend, get_backend
from harness.generate._config import GenerationConfig

log = logging.getLogger(__name__)

NO_MODEL_HASH = "no-model"  # the dummy backend run without a model directory


def model_hash(path: str | Path | None, adapter: str | Path | None = None) -> str:
    """Identity of what generates: the checkpoint's content hash (weights + config), plus the adapter's."""
    base = NO_MODEL_HASH if path is None else checkpoint_hash(path)
    if adapter is None:
        return base
    return hash_value({"model": base, "adapter": adapter_hash(adapter)})


def _load_tokenizer(tokenizer_dir: Path | None) -> Any:
    if tokenizer_dir is None:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{tokenizer_dir}: cannot load a tokenizer ({exc})") from exc


def build_prompt(item: Item, tokenizer: Any, system_prompt: str | None = None) -> str:
    """The exact model input for ``item``: ``benchmarks.build_chat_prompt`` (the tokenizer's chat
    template). Without a tokenizer (dummy backend, no model) the plain texts are joined."""
    system = system_prompt if system_prompt is not None else item.system_prompt
    if tokenizer is None:
        return f"{system}\n\n{item.prompt}" if system else item.prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(
            f"{getattr(tokenizer, 'name_or_path', 'tokenizer')}: the tokenizer has no chat template "
            "(tokenizer_config.json 'chat_template' or chat_template.jinja)"
        )
    return build_chat_prompt(item, tokenizer, system_prompt)


def _drop_truncated_tail(path: Path) -> None:
    """A run killed mid-write leaves a last line without its newline: cut it before appending."""
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning(
                "%s: dropping a truncated last line (%d bytes) left by an interrupted run",
                path,
                len(data) - keep,
            )
            handle.truncate(keep)


def _existing(path: Path, *, expected: dict[str, str], prompt_hashes: dict[str, str]) -> set[tuple[str, int]]:
    """(item_id, sample_index) already in ``path``; a record made differently is a ConfigError."""
    done: set[tuple[str, int]] = set()
    for lineno, record in enumerate(iter_jsonl_tolerant(path, GenerationRecord), start=1):
        for field, value in expected.items():
            if getattr(record, field) != value:
                raise ConfigError(
                    f"{path}: record {lineno} (item {record.item_id!r}) has {field}={getattr(record, field)!r} "
                    f"but this run has {field}={value!r}; these generations come from another model, adapter, "
                    "backend or generation config. Write to another --out file or delete this one."
                )
        wanted = prompt_hashes.get(record.item_id)
        if wanted is not None and record.prompt_hash != wanted:
            raise ConfigError(
                f"{path}: record {lineno} (item {record.item_id!r}) was generated from a different prompt "
                "(chat template or system prompt changed). Write to another --out file or delete this one."
            )
        done.add((record.item_id, record.sample_index))
    return done


@dataclass(frozen=True)
class GenerationFile:
    """One generations file to fill: its items, and the system prompt their chat prompts get."""

    items: Sequence[Item]
    out_path: Path
    system_prompt: str | None = None


def generate_items(
    model_dir: str | Path | None,
    items: Sequence[Item],
    *,
    backend: str | Backend,
    config: GenerationConfig | None = None,
    out_path: str | Path,
    adapter: str | Path | None = None,
    system_prompt: str | None = None,
    tokenizer_dir: str | Path | None = None,
    progress: bool = True,
    backend_options: dict[str, Any] | None = None,
    allow_pickle: bool = False,
) -> Path:
    """Generate ``config.num_samples`` completions per item into ``out_path`` (GenerationRecord JSONL).

    Resumable: records already in ``out_path`` for the same prompt, model (+adapter) hash, backend and
    generation-config hash are kept and their items skipped; a truncated last line is dropped. A file
    made with another model, adapter, backend, config or prompt raises ConfigError (nothing is
    overwritten). ``backend`` is a name (the backend is created and closed here) or a live Backend
    for ``model_dir`` (reused; its adapter is set to ``adapter``, None = the base model).
    """
    generate_files(
        model_dir,
        [GenerationFile(items, Path(out_path), system_prompt)],
        backend=backend,
        config=config,
        adapter=adapter,
        tokenizer_dir=tokenizer_dir,
        progress=progress,
        backend_options=backend_options,
        allow_pickle=allow_pickle,
    )
    return Path(out_path)


def generate_files(
    model_dir: str | Path | None,
    files: Sequence[GenerationFile],
    *,
    backend: str | Backend,
    config: GenerationConfig | None = None,
    adapter: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    progress: bool = True,
    backend_options: dict[str, Any] | None = None,
    allow_pickle: bool = False,
) -> list[float]:
    """:func:`generate_items` for several files with one model and config (a checkpoint's benchmarks):
    their prompts share the backend's batches, so one decode batch spans benchmarks. Each file is
    checked, resumed and written as :func:`generate_items` does. Returns the generation seconds spent
    on each file (a shared batch's time split by the file's share of its prompts)."""
    config = config or GenerationConfig()
    model_path = Path(model_dir) if model_dir is not None else None
    for file in files:
        if len({item.id for item in file.items}) != len(file.items):
            seen: set[str] = set()
            dup = next(item.id for item in file.items if item.id in seen or seen.add(item.id))  # type: ignore[func-returns-value]
            raise DataError(f"{file.out_path}: item id {dup!r} occurs more than once in the items to generate")
    if not isinstance(backend, str):
        owner = getattr(backend, "model_dir", None)
        if owner is not None and model_path is not None and Path(owner).resolve() != model_path.resolve():
            raise ConfigError(f"the {backend.name} backend holds {owner}, not {model_path}")
    backend_name = backend if isinstance(backend, str) else backend.name

    tok_dir = Path(tokenizer_dir) if tokenizer_dir is not None else model_path
    tokenizer = (
        _load_tokenizer(tok_dir) if tok_dir is not None and (tok_dir / "tokenizer_config.json").is_file() else None
    )
    if tokenizer is None and backend_name != "dummy":
        raise ConfigError(f"{tok_dir}: no tokenizer found (tokenizer_config.json); pass tokenizer_dir")
    expected = {
        "model_hash": model_hash(model_path, adapter),
        "gen_config_hash": config.hash(),
        "backend": backend_name,
    }
    pending: list[_Pending] = []
    for index, file in enumerate(files):
        prompts = {item.id: build_prompt(item, tokenizer, file.system_prompt) for item in file.items}
        prompt_hashes = {item_id: hash_text(text) for item_id, text in prompts.items()}
        done: set[tuple[str, int]] = set()
        if file.out_path.exists():
            _drop_truncated_tail(file.out_path)
            done = _existing(file.out_path, expected=expected, prompt_hashes=prompt_hashes)
        todo = [item for item in file.items if any((item.id, i) not in done for i in range(config.num_samples))]
        log.info(
            "%s: %d of %d items to generate (%d done)",
            file.out_path,
            len(todo),
            len(file.items),
            len(file.items) - len(todo),
        )
        file.out_path.parent.mkdir(parents=True, exist_ok=True)
        file.out_path.touch()
        pending += [_Pending(index, item, prompts[item.id], prompt_hashes[item.id], done) for item in todo]
    seconds = [0.0] * len(files)
    if not pending:
        return seconds

    owned = isinstance(backend, str)
    engine: Backend
    if isinstance(backend, str):
        opts = dict(backend_options or {})
        if tokenizer_dir is not None and backend != "dummy":
            opts.setdefault("tokenizer_dir", tokenizer_dir)
        engine = get_backend(backend, model_path, adapter=adapter, allow_pickle=allow_pickle, **opts)
    else:
        engine = backend
        engine.set_adapter(adapter)
    try:
        _generate_batches(engine, pending, [f.out_path for f in files], seconds, config, expected, progress)
    finally:
        if owned:
            engine.close()
    return seconds


@dataclass(frozen=True)
class _Pending:
    """An item still to generate, with the file it goes to."""

    file: int
    item: Item
    prompt: str
    prompt_hash: str
    done: set[tuple[str, int]]  # the samples its file already holds


def _generate_batches(
    engine: Backend,
    pending: list[_Pending],
    paths: list[Path],
    seconds: list[float],
    config: GenerationConfig,
    expected: dict[str, str],
    progress: bool,
) -> None:
    from tqdm.auto import tqdm

    # A backend batches internally; writing every batch_size items bounds what a kill can lose.
    chunk_size = max(config.batch_size, 1)
    bar = tqdm(total=len(pending), desc=f"generate ({engine.name})", unit="item", disable=not progress)
    for start in range(0, len(pending), chunk_size):
        chunk = pending[start : start + chunk_size]
        started = time.perf_counter()
        outputs = engine.generate([p.prompt for p in chunk], config)
        by_file: dict[int, list[GenerationRecord]] = {}
        for p, completions in zip(chunk, outputs, strict=True):
            by_file.setdefault(p.file, []).extend(
                GenerationRecord(
                    item_id=p.item.id,
                    benchmark=p.item.benchmark,
                    sample_index=index,
                    prompt_text=p.prompt,
                    prompt_hash=p.prompt_hash,
                    completion=completion.text,
                    finish_reason=completion.finish_reason,
                    num_tokens=completion.num_tokens,
                    language=p.item.language,
                    category=p.item.category,
                    **expected,
                )
                for index, completion in enumerate(completions)
                if (p.item.id, index) not in p.done
            )
        for file, records in by_file.items():
            append_jsonl(paths[file], records)
            with open(paths[file], "rb") as handle:
                os.fsync(handle.fileno())
        spent = time.perf_counter() - started
        for p in chunk:
            seconds[p.file] += spent / len(chunk)
        bar.update(len(chunk))
    bar.close()
