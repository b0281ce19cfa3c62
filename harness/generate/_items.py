"""Benchmark items -> generations.jsonl: chat prompts, provenance hashes, batched appends, resume."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
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
    config = config or GenerationConfig()
    out_path = Path(out_path)
    model_path = Path(model_dir) if model_dir is not None else None
    if len({item.id for item in items}) != len(items):
        seen: set[str] = set()
        dup = next(item.id for item in items if item.id in seen or seen.add(item.id))  # type: ignore[func-returns-value]
        raise DataError(f"item id {dup!r} occurs more than once in the items to generate")
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
    prompts = {item.id: build_prompt(item, tokenizer, system_prompt) for item in items}
    prompt_hashes = {item_id: hash_text(text) for item_id, text in prompts.items()}
    expected = {
        "model_hash": model_hash(model_path, adapter),
        "gen_config_hash": config.hash(),
        "backend": backend_name,
    }

    done: set[tuple[str, int]] = set()
    if out_path.exists():
        _drop_truncated_tail(out_path)
        done = _existing(out_path, expected=expected, prompt_hashes=prompt_hashes)
    todo = [item for item in items if any((item.id, i) not in done for i in range(config.num_samples))]
    log.info("%s: %d of %d items to generate (%d done)", out_path, len(todo), len(items), len(items) - len(todo))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.touch()
    if not todo:
        return out_path

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
        _generate_batches(engine, todo, prompts, prompt_hashes, done, config, out_path, expected, progress)
    finally:
        if owned:
            engine.close()
    return out_path


def _generate_batches(
    engine: Backend,
    todo: list[Item],
    prompts: dict[str, str],
    prompt_hashes: dict[str, str],
    done: set[tuple[str, int]],
    config: GenerationConfig,
    out_path: Path,
    expected: dict[str, str],
    progress: bool,
) -> None:
    from tqdm.auto import tqdm

    # A backend batches internally; writing every batch_size items bounds what a kill can lose.
    chunk_size = max(config.batch_size, 1)
    bar = tqdm(total=len(todo), desc=f"generate ({engine.name})", unit="item", disable=not progress)
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start : start + chunk_size]
        outputs = engine.generate([prompts[item.id] for item in chunk], config)
        records = [
            GenerationRecord(
                item_id=item.id,
                benchmark=item.benchmark,
                sample_index=index,
                prompt_text=prompts[item.id],
                prompt_hash=prompt_hashes[item.id],
                completion=completion.text,
                finish_reason=completion.finish_reason,
                num_tokens=completion.num_tokens,
                language=item.language,
                category=item.category,
                **expected,
            )
            for item, completions in zip(chunk, outputs, strict=True)
            for index, completion in enumerate(completions)
            if (item.id, index) not in done
        ]
        append_jsonl(out_path, records)
        with open(out_path, "rb") as handle:
            os.fsync(handle.fileno())
        bar.update(len(chunk))
    bar.close()
