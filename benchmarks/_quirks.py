"""Row transforms a YAML spec cannot say (named by a spec's ``quirk``): Python only where needed."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from os.path import commonpath

from benchmarks._readers import Row

QUIRKS: dict[str, Callable[[Row], Row]] = {}


def _quirk(name: str) -> Callable[[Callable[[Row], Row]], Callable[[Row], Row]]:
    def decorator(fn: Callable[[Row], Row]) -> Callable[[Row], Row]:
        QUIRKS[name] = fn
        return fn

    return decorator


@_quirk("multijail")
def _multijail(row: Row) -> Row:
    tags = ast.literal_eval(row["tags"]) if isinstance(row.get("tags"), str) else row.get("tags")
    tags = list(tags or [])
    return {**row, "tags": tags, "_category": tags[0] if tags else None}


@_quirk("gsm8k")
def _gsm8k(row: Row) -> Row:
    answer = str(row["answer"])
    final = answer.split("####")[-1].strip().replace(",", "")
    return {**row, "_reference": final, "solution": answer}


@_quirk("task_answer")
def _task_answer(row: Row) -> Row:
    # GSM8K rows (question/answer) or Alpaca rows (instruction/input/output), prompt built as the zoo does.
    if "question" in row:
        return {**row, "prompt": str(row["question"]), "_reference": str(row["answer"])}
    instruction, extra = str(row["instruction"]), str(row.get("input") or "")
    return {**row, "prompt": f"{instruction}\n\n{extra}" if extra else instruction, "_reference": str(row["output"])}


@_quirk("humaneval")
def _humaneval(row: Row) -> Row:
    return {**row, "code_prompt": row["prompt"]}


@_quirk("xcopa_zh")
def _xcopa_zh(row: Row) -> Row:
    # lm-eval's xcopa_zh: premise without its final punctuation + connector; choices as given.
    connector = {"cause": "因为", "effect": "所以"}[row["question"]]
    context = str(row["premise"]).strip()[:-1] + f" {connector}"
    return {**row, "prompt": context, "_reference": str(row["label"]), "choices": [row["choice1"], row["choice2"]]}


@_quirk("hh_rlhf")
def _hh_rlhf(row: Row) -> Row:
    chosen, rejected = str(row["chosen"]), str(row["rejected"])
    # Prompt = the longest common prefix up to an "\n\nAssistant:" boundary (robust to replies
    # that embed "Human:" text); split it into turns; the last Human turn is the prompt.
    common = commonpath([chosen, rejected])
    cut = common.rfind("\n\nAssistant:")
    dialogue = chosen[:cut] if cut >= 0 else chosen[: chosen.rfind("\n\nAssistant:")]
    turns = re.split(r"\n\n(Human|Assistant): ", dialogue)
    messages: list[dict[str, str]] = []
    for role, text in zip(turns[1::2], turns[2::2], strict=False):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": text.strip()})
    while messages and messages[-1]["role"] != "user":  # a shared opening of the final reply
        messages.pop()
    if not messages:
        raise ValueError("no Human turn")
    return {
        **row,
        "prompt": messages[-1]["content"],
        "history": messages[:-1],
        "_reference": chosen[len(dialogue) :].removeprefix("\n\nAssistant:").strip(),
    }
