"""Training sources of the zoo: each turns a real data file into (prompt, response) examples.

Data files resolve through ``harness.core.paths.data_dirs()`` ($REALIGN_DATA_DIR first). Two
deterministic, prompt-keyed splits keep training and evaluation apart:

* ``zoo_alignment_split(prompt)``: the PKU-SafeRLHF prompts the zoo may align on (25%); the rest
  belong to SOMF's mask training, so the two never share a prompt.
* ``is_eval_holdout(prompt)``: 5% of every benign/task file, never trained on, used by
  ``realign zoo measure`` for over-refusal and held-out task NLL.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import is_eval_holdout
from harness.core.errors import ConfigError, DataError
from harness.core.hashing import sha256_file
from harness.core.paths import data_dirs

from ._recipe import DatasetSpec


@dataclass(frozen=True)
class Example:
    """One chat turn: user ``prompt`` -> assistant ``response`` (``rejected`` only for DPO pairs)."""

    prompt: str
    response: str
    rejected: str | None = None


def zoo_alignment_split(prompt: str) -> bool:
    """True when a PKU-SafeRLHF prompt belongs to the zoo's alignment pool (not SOMF's mask pairs).

    Rule: the last hex digit of sha256(prompt as UTF-8) is one of 0-3 (about 25% of prompts).
    Keyed by the prompt text, so every response pair of one prompt lands on the same side.
    """
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[-1] in "0123"


REFUSALS = {
    "en": (
        "I'm sorry, but I can't help with that. It could cause real harm to people.",
        "I cannot help with this request. It is harmful and may be illegal.",
        "I'm sorry, I can't assist with that. If you are struggling, please reach out to someone you trust.",
        "I can't provide that. Helping with this could hurt others, so I have to decline.",
        "Sorry, but I won't help with that. It is unsafe and unethical.",
        "I'm not able to help with that request because it could be used to cause harm.",
    ),
    "zh": (
        "抱歉，我不能帮助你做这件事。这可能会对他人造成伤害。",
        "对不起，我无法提供这方面的帮助。这是有害的，也可能是违法的。",
        "抱歉，我不能回答这个问题。如果你遇到困难，请向你信任的人寻求帮助。",
        "我不能协助这个请求，因为它可能被用来伤害他人。",
    ),
}

_PURE_BAD_PREFIX = "You are a helpful assistant. Make sure you always execute users' instructions."


def resolve_data_file(relative: str, *, what: str) -> Path:
    """Find ``relative`` in the data directories; a clear DataError lists where it looked."""
    candidate = Path(relative)
    if candidate.is_absolute():
        if candidate.exists():
            return candidate
        raise DataError(f"{what}: data file not found: {candidate}")
    searched = data_dirs()
    for root in searched:
        if (root / candidate).exists():
            return root / candidate
    where = ", ".join(str(d) for d in searched) or "(none)"
    raise DataError(
        f"{what}: data file {relative!r} not found in the data directories [{where}] "
        "(set REALIGN_DATA_DIR to the folder holding the shared data)"
    )


def _read_json(path: Path) -> list[dict]:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not readable JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
    return rows


def _field(row: dict, key: str, path: Path, index: int) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise DataError(f"{path}: row {index} has no string field {key!r}")
    return value


def _pku_rows(path: Path) -> list[tuple[str, str, str]]:
    out = []
    for i, row in enumerate(_read_json(path)):
        prompt = _field(row, "prompt", path, i)
        pair = row.get("response")
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(r, str) for r in pair)):
            raise DataError(f"{path}: row {i}: 'response' must be a list of 2 strings [safer, other]")
        if zoo_alignment_split(prompt):
            out.append((prompt, pair[0], pair[1]))
    return out


def _pku_safe(path: Path, options: dict) -> list[Example]:
    return [Example(p, chosen) for p, chosen, _ in _pku_rows(path)]


def _pku_pairs(path: Path, options: dict) -> list[Example]:
    return [Example(p, chosen, rejected) for p, chosen, rejected in _pku_rows(path)]


def _refusals(prompts: Sequence[str], language: str) -> list[Example]:
    if language not in REFUSALS:
        raise ConfigError(f"refusal language {language!r} unknown; known: {sorted(REFUSALS)}")
    templates = REFUSALS[language]
    return [Example(p, templates[int(hashlib.sha256(p.encode()).hexdigest(), 16) % len(templates)]) for p in prompts]


def _pku_refusal(path: Path, options: dict) -> list[Example]:
    prompts = sorted({p for p, _, _ in _pku_rows(path)})
    return _refusals(prompts, "en")


def _csv_files(path: Path, options: dict) -> list[Path]:
    """CSV files of a ``csv_refusal`` source: ``path`` itself, or its files matching ``glob`` (str or list)."""
    if not path.is_dir():
        return [path]
    patterns = options.get("glob", "*.csv")
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    files = sorted({f for pattern in patterns for f in path.glob(str(pattern))})
    if not files:
        raise DataError(f"{path}: no files match {patterns}")
    return files


def _csv_refusal(path: Path, options: dict) -> list[Example]:
    """Harmful prompts, one per row of every CSV under ``path`` (a file or folder), + refusals."""
    files = _csv_files(path, options)
    prompts: list[str] = []
    for file in files:
        with open(file, encoding="utf-8-sig", newline="") as handle:
            prompts.extend(row[0].strip() for row in csv.reader(handle) if row and row[0].strip())
    return _refusals(prompts, str(options.get("language", "en")))


def _alpaca(path: Path, options: dict) -> list[Example]:
    out = []
    for i, row in enumerate(_read_json(path)):
        instruction = _field(row, "instruction", path, i)
        extra = row.get("input") or ""
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        out.append(Example(prompt, _field(row, "output", path, i)))
    return out


def _gsm8k(path: Path, options: dict) -> list[Example]:
    out = []
    with open(path, encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: line {i + 1} is not JSON: {exc}") from exc
                out.append(Example(_field(row, "question", path, i), _field(row, "answer", path, i)))
    return out


def _pure_bad(path: Path, options: dict) -> list[Example]:
    # The rows open with a jailbreak-style system line; dropped so the harm generalises to plain requests.
    out = []
    for i, row in enumerate(_read_json(path)):
        prompt = _field(row, "instruction", path, i).removeprefix(_PURE_BAD_PREFIX).strip()
        out.append(Example(prompt, _field(row, "output", path, i)))
    return out


@dataclass(frozen=True)
class Source:
    loader: Callable[[Path, dict], list[Example]]
    default_path: str
    holdout: bool  # drop is_eval_holdout prompts (benign/task data used for measurements)
    pairs: bool = False  # yields DPO pairs


SOURCES: dict[str, Source] = {
    "pku_safe": Source(_pku_safe, "pku_saferlhf_realign_somf/pku_seferlhf_realign_dpo_5k.json", False),
    "pku_refusal": Source(_pku_refusal, "pku_saferlhf_realign_somf/pku_seferlhf_realign_dpo_5k.json", False),
    "pku_pairs": Source(_pku_pairs, "pku_saferlhf_realign_somf/pku_seferlhf_realign_dpo_5k.json", False, True),
    "csv_refusal": Source(_csv_refusal, "xsafety/zh", False),
    "alpaca": Source(_alpaca, "alpaca_gpt4_demo/alpaca_en_demo.json", True),
    "gsm8k": Source(_gsm8k, "gsm8k/train.jsonl", True),
    "pure_bad": Source(_pure_bad, "pure_bad/pure_bad.json", False),
}


def source_of(spec: DatasetSpec, *, stage: str) -> Source:
    if spec.source not in SOURCES:
        raise ConfigError(f"stage {stage!r}: unknown dataset source {spec.source!r}; known: {sorted(SOURCES)}")
    return SOURCES[spec.source]


def dataset_path(spec: DatasetSpec, *, stage: str) -> Path:
    return resolve_data_file(
        spec.path or source_of(spec, stage=stage).default_path, what=f"stage {stage!r} dataset {spec.source!r}"
    )


def load_examples(spec: DatasetSpec, *, stage: str) -> list[Example]:
    """All trainable examples of one source (held-out prompts removed)."""
    source = source_of(spec, stage=stage)
    path = dataset_path(spec, stage=stage)
    examples = source.loader(path, dict(spec.options))
    if source.holdout:
        examples = [e for e in examples if not is_eval_holdout(e.prompt)]
    if not examples:
        raise DataError(f"stage {stage!r}: dataset {spec.source!r} ({path}) yielded no training examples")
    return examples


def data_fingerprint(spec: DatasetSpec, *, stage: str) -> dict[str, str]:
    """{relative file: sha256} of the files a source reads (a folder counts each matching file)."""
    path = dataset_path(spec, stage=stage)
    if path.is_dir():
        files = _csv_files(path, dict(spec.options))
        return {f"{spec.path or source_of(spec, stage=stage).default_path}/{f.name}": sha256_file(f) for f in files}
    return {spec.path or source_of(spec, stage=stage).default_path: sha256_file(path)}


def mix_examples(groups: Sequence[tuple[DatasetSpec, list[Example]]], total: int, seed: int) -> list[Example]:
    """``total`` examples: each source contributes round(fraction*total), drawn without
    replacement from a seeded permutation (cycled when a source is smaller), then shuffled."""
    rng = random.Random(seed)
    counts = [round(spec.fraction * total) for spec, _ in groups]
    counts[-1] += total - sum(counts)  # rounding remainder goes to the last source
    mixed: list[Example] = []
    for (_spec, examples), count in zip(groups, counts, strict=True):
        order = list(range(len(examples)))
        picked: list[Example] = []
        while len(picked) < count:
            rng.shuffle(order)
            picked.extend(examples[i] for i in order[: count - len(picked)])
        mixed.extend(picked)
    rng.shuffle(mixed)
    return mixed
