"""Prompts through the model's own chat template."""

from __future__ import annotations

from typing import Any

from harness.core.records import Item


def chat_messages(item: Item, system_prompt: str | None = None) -> list[dict[str, str]]:
    """System turn (override, else the item's default), earlier dialogue turns, then the user prompt."""
    system = system_prompt if system_prompt is not None else item.system_prompt
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    messages += [dict(m) for m in item.metadata.get("history", [])]
    messages.append({"role": "user", "content": item.prompt})
    return messages


def build_chat_prompt(item: Item, tokenizer: Any, system_prompt: str | None = None) -> str:
    """The exact text to feed the model: its chat template with the generation prompt appended."""
    text: str = tokenizer.apply_chat_template(
        chat_messages(item, system_prompt), add_generation_prompt=True, tokenize=False
    )
    return text
