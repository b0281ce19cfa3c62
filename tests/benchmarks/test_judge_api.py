"""API judge against a real OpenAI-format HTTP server on 127.0.0.1 (answers, refuses, times out)."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from benchmarks.judges import EndpointError, get_judge
from benchmarks.judges._prompts import RESTA_SYSTEM, SOMF_SYSTEM
from harness.core.errors import ConfigError
from harness.core.records import GenerationRecord, Item, Verdict, read_jsonl


class FakeEndpoint:
    """A scripted chat-completions server: a queue of faults, then a verdict chosen from the text."""

    def __init__(self) -> None:
        self.faults: list[Any] = []  # 429, 500, "hang", "garbage", 401 ... consumed one per request
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"path": self.path, "time": time.monotonic(), **body})
                endpoint.headers.append(dict(self.headers))
                fault = endpoint.faults.pop(0) if endpoint.faults else None
                if fault == "hang":
                    time.sleep(1.0)
                    return
                if isinstance(fault, int):
                    self.send_response(fault)
                    if fault == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "slow down"}}')
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                content = (
                    "not json"
                    if fault == "garbage"
                    else json.dumps({"choices": [{"message": {"role": "assistant", "content": endpoint.answer(body)}}]})
                )
                self.wfile.write(content.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(body: dict[str, Any]) -> str:
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        if system == SOMF_SYSTEM:  # pairwise: whichever answer mentions "explosive" is more harmful
            a_part, b_part = user.split("<ResponseA>:")[1].split("<ResponseB>:")
            verdict = (
                "[[responseA]]" if "explosive" in a_part else "[[responseB]]" if "explosive" in b_part else "[[Equal]]"
            )
            return f'Response A is ... More harmful: "{verdict}"'
        assert system == RESTA_SYSTEM
        return "The answer gives instructions. [[B]]" if "explosive" in user else "It declines. [[A]]"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    server = FakeEndpoint()
    yield server
    server.close()


def gen(item_id: str, completion: str) -> GenerationRecord:
    return GenerationRecord(
        item_id=item_id,
        benchmark="harmfulqa",
        prompt_text="-",
        prompt_hash="-",
        completion=completion,
        model_hash="-",
        gen_config_hash="-",
        backend="dummy",
    )


ITEMS = {k: Item(id=k, benchmark="harmfulqa", prompt=f"question {k}?") for k in "abcd"}
GENS = [
    gen("a", "Mix the explosive like so."),
    gen("b", "I won't help."),
    gen("c", "No."),
    gen("d", "Use explosive X."),
]


def api(endpoint: FakeEndpoint, **options: Any) -> Any:
    defaults = {
        "base_url": endpoint.url,
        "model": "judge-model",
        "backoff": 0.01,
        "max_backoff": 0.05,
        "timeout": 0.5,
        "requests_per_minute": 0,
    }
    return get_judge("api", **{**defaults, **options})


def test_resta_prompt_labels_and_sends_the_key_without_logging_it(
    endpoint: FakeEndpoint, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-secret-123")
    endpoint.faults = [500]
    judge = api(endpoint, api_key_env="MY_JUDGE_KEY")
    verdicts = judge.judge(GENS, ITEMS)
    assert [v.label for v in verdicts] == ["harmful", "harmless", "harmless", "harmful"]
    assert verdicts[0].judge_id == "api/resta@1" and "[[B]]" in (verdicts[0].rationale or "")
    assert endpoint.requests[0]["path"] == "/v1/chat/completions"
    assert endpoint.requests[0]["model"] == "judge-model" and endpoint.requests[0]["temperature"] == 0.0
    assert "question a?" in endpoint.requests[0]["messages"][1]["content"]
    assert endpoint.headers[0]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret" not in caplog.text and "HTTP 500" in caplog.text


def test_retries_429_and_500_then_fails_naming_endpoint_and_item(endpoint: FakeEndpoint) -> None:
    endpoint.faults = [429, 500, 429]
    judge = api(endpoint, max_retries=3)
    assert judge.judge(GENS[:1], ITEMS)[0].label == "harmful"
    assert len(endpoint.requests) == 4
    endpoint.faults = [500] * 10
    with pytest.raises(EndpointError) as info:
        judge.judge(GENS[1:2], ITEMS)
    message = str(info.value)
    assert f"{endpoint.url}/chat/completions" in message and "item 'b'" in message
    assert "after 4 attempts" in message and "HTTP 500" in message


def test_client_errors_are_not_retried(endpoint: FakeEndpoint) -> None:
    endpoint.faults = [401]
    with pytest.raises(EndpointError, match=r"refused item 'a' \(sample 0\): HTTP 401: .*not retried"):
        api(endpoint).judge(GENS[:1], ITEMS)
    assert len(endpoint.requests) == 1
    endpoint.faults = ["garbage"]
    with pytest.raises(EndpointError, match="no choices"):
        api(endpoint).judge(GENS[:1], ITEMS)


def test_timeout_is_retried_then_reported(endpoint: FakeEndpoint) -> None:
    endpoint.faults = ["hang"]
    assert api(endpoint, timeout=0.2).judge(GENS[:1], ITEMS)[0].label == "harmful"
    endpoint.faults = ["hang", "hang"]
    with pytest.raises(
        EndpointError, match=r"item 'a' \(sample 0\) after 2 attempts: no answer within the 0.2s timeout"
    ):
        api(endpoint, timeout=0.2, max_retries=1).judge(GENS[:1], ITEMS)


def test_partial_verdicts_are_kept_and_a_rerun_continues(endpoint: FakeEndpoint, tmp_path: Path) -> None:
    out = tmp_path / "judgments.jsonl"
    judge = api(endpoint, max_retries=1)
    endpoint.faults = [None, None, 500, 500]  # items a, b answered; c fails twice
    with pytest.raises(EndpointError, match=r"item 'c'.*2 verdicts so far are kept in .*judgments\.jsonl"):
        judge.judge_to_file(GENS, ITEMS, out)
    assert [v.item_id for v in read_jsonl(out, Verdict)] == ["a", "b"]
    endpoint.requests.clear()
    verdicts = judge.judge_to_file(GENS, ITEMS, out)
    assert [r["messages"][1]["content"].split("\n")[0] for r in endpoint.requests] == [
        "Question: question c?",
        "Question: question d?",
    ]
    assert [v.label for v in verdicts] == ["harmful", "harmless", "harmless", "harmful"]
    assert len(read_jsonl(out, Verdict)) == 4


def test_rate_limit_spaces_requests(endpoint: FakeEndpoint) -> None:
    api(endpoint, requests_per_minute=300).judge(GENS[:3], ITEMS)  # >= 0.2 s apart
    starts = [r["time"] for r in endpoint.requests]
    assert all(b - a >= 0.18 for a, b in itertools.pairwise(starts))


def test_somf_pairwise_prompt(endpoint: FakeEndpoint, tmp_path: Path) -> None:
    judge = api(endpoint, prompt="somf")
    candidate = [gen("a", "I refuse."), gen("b", "Use explosive Y."), gen("c", "No.")]
    reference = [gen("a", "Here: explosive recipe."), gen("b", "No way."), gen("c", "Nope.")]
    verdicts = judge.judge_pairs_to_file(candidate, reference, ITEMS, tmp_path / "pairs.jsonl")
    assert [v.label for v in verdicts] == ["win", "loss", "draw"] and verdicts[0].judge_id == "api/somf@1"
    user = endpoint.requests[0]["messages"][1]["content"]
    assert "<ResponseA>: Here: explosive recipe.\n<ResponseB>: I refuse.\n\n" in user  # A = reference
    with pytest.raises(ConfigError, match="give a reference"):
        judge.judge(candidate, ITEMS)


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="needs base_url"):
        get_judge("api", model="m")
    with pytest.raises(ConfigError, match="needs model"):
        get_judge("api", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match="prompt='x'"):
        get_judge("api", base_url="http://127.0.0.1:9/v1", model="m", prompt="x")
