"""A deterministic backend with no model, for testing the stages after generation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from harness.core.hashing import hash_value
from harness.generate._adapter import adapter_hash
from harness.generate._config import Completion, FinishReason, GenerationConfig, truncate_at_stop

DEFAULT_RESPONSES: tuple[str, ...] = (
    "I'm sorry, but I cannot help with that request.",
    "Sure, here is a detailed answer. First, gather what you need. Then follow the steps carefully.",
    "As an AI assistant, I must decline; this could cause harm.",
    "Here is how you could approach it: start small, test each step, and write down the results.",
)


class DummyBackend:
    """Answers each prompt with a canned response chosen by a hash of (prompt, seed, sample, adapter).

    ``responses`` replaces the canned pool; ``respond(prompt, sample_index) -> str`` replaces the
    choice altogether. Greedy configs ignore the seed, as a real greedy decoder would. Tokens are
    whitespace-separated words, so ``max_new_tokens`` and stop strings behave like a real backend's.
    """

    name = "dummy"

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        adapter: str | Path | None = None,
        responses: Sequence[str] | None = None,
        respond: Callable[[str, int], str] | None = None,
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.responses = tuple(responses) if responses is not None else DEFAULT_RESPONSES
        if not self.responses:
            raise ValueError("DummyBackend needs at least one response")
        self.respond = respond
        self.adapter: Path | None = None
        self._adapter_id = ""
        self.calls = 0  # number of generate() calls, so tests can see whether a resume skipped work
        self.set_adapter(adapter)

    def set_adapter(self, adapter: str | Path | None) -> None:
        self.adapter = Path(adapter) if adapter is not None else None
        self._adapter_id = adapter_hash(self.adapter) if self.adapter is not None else ""

    def _one(self, prompt: str, sample_index: int, config: GenerationConfig) -> Completion:
        if self.respond is not None:
            text = self.respond(prompt, sample_index)
        else:
            seed = None if config.greedy else (config.seed, sample_index)
            pick = int(hash_value([prompt, seed, self._adapter_id]), 16) % len(self.responses)
            text = self.responses[pick]
        words = text.split(" ")
        finish: FinishReason = "stop"
        if len(words) > config.max_new_tokens:
            words, finish = words[: config.max_new_tokens], "length"
        text, stopped = truncate_at_stop(" ".join(words), config.stop)
        if stopped:
            finish = "stop"
        return Completion(text=text, finish_reason=finish, num_tokens=len(text.split()) if text else 0)

    def generate(self, prompts: Sequence[str], config: GenerationConfig) -> list[list[Completion]]:
        self.calls += 1
        return [[self._one(p, i, config) for i in range(config.num_samples)] for p in prompts]

    def close(self) -> None:
        pass
