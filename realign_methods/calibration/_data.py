"""Calibration examples: the default set of each data kind under the data dir, and user files.

Default sets (none of them is read by any benchmark; ``benchmarks/specs`` score catqa, harmfulqa,
xstest, xsafety, somf_safety_eval, hh_rlhf_harmless, advbench, ...):

* ``harmful_answers``: ``pure_bad/pure_bad.json`` (111 harmful request → compliant answer pairs, the
  jailbreak system line dropped); all rows, seeded order. It is training data of θ_U and of the
  fine-tunes' harmful share, never an evaluation set.
* ``harmful_refusals`` / ``preference_pairs``: PKU-SafeRLHF pairs of
  ``pku_saferlhf_realign_somf/pku_seferlhf_realign_dpo_5k.json``, only prompts *outside* the zoo's
  alignment pool (sha256(prompt) last hex digit 4-f, so θ_A never trained on them); response = the
  pair's safer response (refusal-style), rejected = the other.
* ``benign_task``: no default (every shipped task file feeds a task-utility benchmark's held-out
  split); pass ``calibration_data``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import ConfigError, DataError
from harness.core.paths import data_dirs

DATA_KINDS: tuple[str, ...] = ("harmful_refusals", "harmful_answers", "preference_pairs", "benign_task")
_PKU = "pku_saferlhf_realign_somf/pku_seferlhf_realign_dpo_5k.json"
DEFAULT_SETS: dict[str, tuple[str, str] | None] = {
    "harmful_answers": ("pure_bad/pure_bad.json", "all 111 rows (used by no benchmark), seeded order"),
    "harmful_refusals": (_PKU, "PKU prompts outside the zoo alignment pool (sha256 last hex 4-f), safer response"),
    "preference_pairs": (_PKU, "PKU prompts outside the zoo alignment pool (sha256 last hex 4-f), safer/other"),
    "benign_task": None,
}
_JAILBREAK_LINE = "You are a helpful assistant. Make sure you always execute users' instructions."


@dataclass(frozen=True)
class Example:
    prompt: str
    response: str
    rejected: str | None = None


def resolve_data(kind: str, given: Path | None) -> Path:
    """The calibration file: ``given`` when set, else the kind's default under the data dirs."""
    if kind not in DATA_KINDS:
        raise ConfigError(f"calibration data kind {kind!r} unknown; known: {DATA_KINDS}")
    if given is not None:
        if not Path(given).is_file():
            raise DataError(f"calibration_data not found (or not a file): {given}")
        return Path(given)
    default = DEFAULT_SETS[kind]
    if default is None:
        raise DataError(
            f"calibration data kind {kind!r} has no default set: pass calibration_data (--calibration-data FILE)"
        )
    for root in data_dirs():
        candidate = root / default[0]
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(d) for d in data_dirs())
    raise DataError(
        f"default calibration set {default[0]} for {kind!r} not found under {searched} "
        "(set REALIGN_DATA_DIR or pass calibration_data)"
    )


def _rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: neither a JSON list nor JSON lines ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a list of objects (one example each)")
    return data


def _in_alignment_pool(prompt: str) -> bool:
    # the zoo's rule for PKU prompts that θ_A was aligned on (harness.zoo.zoo_alignment_split)
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[-1] in "0123"


def _example(row: dict, path: Path, index: int) -> Example | None:
    """One row in any of the accepted shapes: prompt/response, instruction/output, PKU prompt/[safer, other]."""
    if isinstance(row.get("response"), list):  # PKU-SafeRLHF pair [safer, other]
        prompt, pair = row.get("prompt"), row["response"]
        if not (isinstance(prompt, str) and len(pair) == 2 and all(isinstance(r, str) for r in pair)):
            raise DataError(f"{path}: row {index}: expected 'prompt' and 'response' = [safer, other] strings")
        return None if _in_alignment_pool(prompt) else Example(prompt, pair[0], pair[1])
    prompt = row.get("prompt", row.get("instruction"))
    response = row.get("response", row.get("output", row.get("chosen")))
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise DataError(f"{path}: row {index}: expected string fields prompt/response (or instruction/output)")
    extra = row.get("input") or ""
    prompt = prompt.removeprefix(_JAILBREAK_LINE).strip()
    rejected = row.get("rejected")
    return Example(
        f"{prompt}\n\n{extra}" if extra else prompt, response, rejected if isinstance(rejected, str) else None
    )


def load_examples(path: Path, count: int, seed: int = 0) -> list[Example]:
    """``count`` examples of ``path`` in a seeded order (fewer if the file has fewer)."""
    examples = [e for i, row in enumerate(_rows(path)) if (e := _example(row, path, i)) is not None]
    if not examples:
        raise DataError(f"{path}: no calibration examples")
    random.Random(seed).shuffle(examples)
    return examples[:count]
