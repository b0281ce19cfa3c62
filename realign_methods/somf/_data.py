"""Preference pairs for SOMF's DPO: loading, validation, a by-prompt split, chat-template tokenization.

Accepted files: JSONL or a JSON array whose rows have ``prompt`` plus either ``chosen``/``rejected``
or ``response`` = [chosen, rejected] (LLaMA-Factory's ranking convention, used by the PKU-SafeRLHF
file SOMF ships). Every row is checked before anything trains.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.core.errors import ConfigError, DataError
from harness.core.hashing import sha256_file
from harness.core.paths import data_dirs

DEFAULT_PREFERENCE_FILE = "pku_saferlhf_realign_somf/pku_seferlhf_realign_dpo_5k.json"
# Upstream copy (SOMF's repository at a fixed commit), fetched only when online and not found locally.
_UPSTREAM_URL = (
    "https://raw.githubusercontent.com/xinykou/safety_realignment/5a805935b6fbdd7d63cf013c622631a186c133a5/"
    "llama_factory/data/pku_seferlhf_realign_dpo_5k.json"
)
_UPSTREAM_SHA256 = "deafcb69fea91daa7a1d7b0f8785d0d567f41e8ea5109d49b8966207c2c34818"
IGNORE_INDEX = -100


@dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    row: int  # 0-based row in the source file, for error messages and provenance


@dataclass(frozen=True)
class PreferenceData:
    path: Path
    sha256: str
    train: list[PreferencePair]
    validation: list[PreferencePair]


def _offline() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("REALIGN_OFFLINE", "HF_HUB_OFFLINE"))


def _download_default(target: Path) -> Path:
    """Fetch SOMF's pairs from the upstream commit into the user cache, sha256-checked, atomically."""
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    try:
        with urllib.request.urlopen(_UPSTREAM_URL, timeout=60) as response, open(tmp, "wb") as handle:
            handle.write(response.read())
        digest = sha256_file(tmp)
        if digest != _UPSTREAM_SHA256:
            raise DataError(f"{_UPSTREAM_URL}: sha256 {digest} differs from the pinned {_UPSTREAM_SHA256}")
        os.replace(tmp, target)
    except OSError as exc:
        raise DataError(f"could not download SOMF's preference pairs from {_UPSTREAM_URL} ({exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def default_preference_file() -> Path:
    """SOMF's PKU-SafeRLHF pairs: $REALIGN_DATA_DIR, then the user cache, then (online) the upstream file."""
    for root in data_dirs():
        candidate = root / DEFAULT_PREFERENCE_FILE
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in data_dirs())
    if _offline():
        raise DataError(
            f"the default SOMF preference file {DEFAULT_PREFERENCE_FILE} was not found under {searched} (offline, "
            "so not downloaded); set REALIGN_DATA_DIR or pass a preference file"
        )
    return _download_default(data_dirs()[-1] / DEFAULT_PREFERENCE_FILE)


def _read_rows(path: Path) -> list[Any]:
    if not path.is_file():
        raise DataError(f"{path}: preference file not found")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from exc
        return list(rows)
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON ({exc.msg})") from exc
    return rows


def _pair_from_row(path: Path, index: int, row: Any) -> PreferencePair:
    where = f"{path}: row {index}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with prompt/chosen/rejected, got {type(row).__name__}")
    if "chosen" in row or "rejected" in row:
        fields = {"prompt": row.get("prompt"), "chosen": row.get("chosen"), "rejected": row.get("rejected")}
    elif "response" in row:
        response = row["response"]
        if not isinstance(response, list) or len(response) != 2:
            raise DataError(f"{where}: field 'response' must be a list [chosen, rejected] of 2 strings")
        fields = {"prompt": row.get("prompt"), "chosen": response[0], "rejected": response[1]}
    else:
        raise DataError(f"{where}: missing field(s) 'chosen' and 'rejected' (or 'response' = [chosen, rejected])")
    for field, value in fields.items():
        if value is None:
            raise DataError(f"{where}: missing field {field!r}")
        if not isinstance(value, str):
            raise DataError(f"{where}: field {field!r} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise DataError(f"{where}: field {field!r} is empty")
    prompt, chosen, rejected = str(fields["prompt"]), str(fields["chosen"]), str(fields["rejected"])
    if chosen.strip() == rejected.strip():
        raise DataError(
            f"{where}: 'chosen' and 'rejected' are the same text; a preference pair needs two different responses"
        )
    return PreferencePair(prompt, chosen, rejected, index)


def load_pairs(path: str | Path) -> list[PreferencePair]:
    """All rows of ``path`` as validated pairs (DataError on the first bad row)."""
    path = Path(path)
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path}: no preference pairs")
    return [_pair_from_row(path, i, row) for i, row in enumerate(rows)]


def split_by_prompt(
    pairs: list[PreferencePair], *, val_fraction: float, seed: int, max_pairs: int | None = None
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Train/validation split over unique prompts (a prompt's pairs all land on one side).

    ``max_pairs`` keeps a seeded subset of whole prompts first, so small runs are still by-prompt.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"somf val_fraction must be in [0, 1), got {val_fraction}")
    prompts = sorted({p.prompt for p in pairs})
    random.Random(seed).shuffle(prompts)
    by_prompt: dict[str, list[PreferencePair]] = {}
    for pair in pairs:
        by_prompt.setdefault(pair.prompt, []).append(pair)
    if max_pairs is not None:
        kept: list[str] = []
        count = 0
        for prompt in prompts:
            if count >= max_pairs:
                break
            kept.append(prompt)
            count += len(by_prompt[prompt])
        prompts = kept
    n_val = round(len(prompts) * val_fraction)
    if val_fraction > 0 and n_val == 0 and len(prompts) > 1:
        n_val = 1
    val_prompts, train_prompts = prompts[:n_val], prompts[n_val:]
    train = [p for prompt in train_prompts for p in by_prompt[prompt]]
    validation = [p for prompt in val_prompts for p in by_prompt[prompt]]
    if max_pairs is not None:
        # Whole prompts may overshoot; trim the training side (validation stays whole-prompt).
        train = train[: max(max_pairs - len(validation), 1)]
    if not train:
        raise DataError("no training pairs left after the train/validation split; lower val_fraction or add data")
    return train, validation


def load_preference_data(
    path: str | Path | None, *, val_fraction: float, seed: int, max_pairs: int | None = None
) -> PreferenceData:
    source = Path(path) if path is not None else default_preference_file()
    pairs = load_pairs(source)
    train, validation = split_by_prompt(pairs, val_fraction=val_fraction, seed=seed, max_pairs=max_pairs)
    return PreferenceData(source, sha256_file(source), train, validation)


@dataclass(frozen=True)
class TokenizedPair:
    chosen_ids: list[int]
    chosen_labels: list[int]
    rejected_ids: list[int]
    rejected_labels: list[int]


def _encode(
    tokenizer: Any, prompt: str, response: str, max_length: int, max_prompt_length: int
) -> tuple[list[int], list[int]]:
    """Chat-formatted prompt+response ids and labels (prompt positions are IGNORE_INDEX)."""
    user = [{"role": "user", "content": prompt}]
    if getattr(tokenizer, "chat_template", None):
        prompt_ids = list(
            tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=True, return_dict=False)
        )
        full_ids = list(
            tokenizer.apply_chat_template(
                [*user, {"role": "assistant", "content": response}], tokenize=True, return_dict=False
            )
        )
        if full_ids[: len(prompt_ids)] == prompt_ids and len(full_ids) > len(prompt_ids):
            response_ids = full_ids[len(prompt_ids) :]
        else:  # templates that rewrite earlier turns: fall back to appending the response
            response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
            if tokenizer.eos_token_id is not None:
                response_ids.append(tokenizer.eos_token_id)
    else:
        prompt_ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        response_ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
        if tokenizer.eos_token_id is not None:
            response_ids.append(tokenizer.eos_token_id)
    if len(prompt_ids) > max_prompt_length:  # keep the end of the prompt (the generation header)
        prompt_ids = prompt_ids[-max_prompt_length:]
    response_ids = response_ids[: max(max_length - len(prompt_ids), 1)]
    return prompt_ids + response_ids, [IGNORE_INDEX] * len(prompt_ids) + response_ids


def tokenize_pairs(
    tokenizer: Any, pairs: list[PreferencePair], *, max_length: int, max_prompt_length: int
) -> list[TokenizedPair]:
    out = []
    for pair in pairs:
        c_ids, c_labels = _encode(tokenizer, pair.prompt, pair.chosen, max_length, max_prompt_length)
        r_ids, r_labels = _encode(tokenizer, pair.prompt, pair.rejected, max_length, max_prompt_length)
        out.append(TokenizedPair(c_ids, c_labels, r_ids, r_labels))
    return out


def collate(batch: list[TokenizedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen rows first, then rejected rows, right-padded to the longest sequence of the batch."""
    sequences = [(p.chosen_ids, p.chosen_labels) for p in batch] + [(p.rejected_ids, p.rejected_labels) for p in batch]
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
