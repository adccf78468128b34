"""A real OpenAI-compatible HTTP server on 127.0.0.1 for the LLM-review tests, with scripted behaviours.

Each request's behaviour is chosen by the text under review (the last user message, after "Text: "): `script[text]`
is a list of replies used in order, the last one repeating. Every request is recorded, so tests can count HTTP calls.
Every 200 carries a `usage` block (whitespace token counts, always > 0).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.loopback import running


@dataclass(frozen=True)
class Reply:
    """One scripted reply: an answer (status 200) or an HTTP error, optionally after a delay."""

    content: str = ""
    status: int = 200
    delay: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


def answer(content: str, delay: float = 0.0) -> Reply:
    return Reply(content=content, delay=delay)


def error(status: int, message: str = "scripted error", retry_after: float | None = None) -> Reply:
    headers = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
    return Reply(content=message, status=status, headers=headers)


@dataclass
class FakeLLM:
    """The server's state: its script, the default reply, whether it rejects response_format, what it received."""

    script: dict[str, list[Reply]] = field(default_factory=dict)
    default: Reply = field(default_factory=lambda: answer("abstain"))
    reject_response_format: bool = False
    reject_status: int = 400  # llama-cpp-python's server answers json_schema with a 500 naming response_format
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    _served: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def calls(self, text: str | None = None) -> int:
        """HTTP calls received (for one text, or all)."""
        with self._lock:
            return sum(1 for r in self.requests if text is None or _text_of(r) == text)

    def next_reply(self, body: dict[str, Any]) -> Reply:
        text = _text_of(body)
        with self._lock:
            self.requests.append(body)
            if self.reject_response_format and body.get("response_format"):
                return error(self.reject_status, "1 validation error: ('body', 'response_format', 'type'): "
                                                 "Input should be 'text' or 'json_object'")
            replies = self.script.get(text)
            if not replies:
                return self.default
            n = self._served.get(text, 0)
            self._served[text] = n + 1
            return replies[min(n, len(replies) - 1)]


def _text_of(body: dict[str, Any]) -> str:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    last = users[-1] if users else ""
    return last.removeprefix("Text: ")


def _words(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in messages)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, payload: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout tests)

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        fake = self.server.fake
        reply = fake.next_reply(body)
        with fake._lock:
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            if reply.delay:
                time.sleep(reply.delay)
        finally:
            with fake._lock:
                fake.in_flight -= 1
        if reply.status != 200:
            self._send(reply.status, {"error": {"message": reply.content, "type": "scripted", "code": reply.status}},
                       reply.headers)
            return
        prompt_tokens = max(_words(body.get("messages", [])), 1)
        completion_tokens = max(len(reply.content.split()), 1)
        self._send(200, {
            "id": f"chatcmpl-{len(self.server.fake.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, reply.headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeLLM


@contextmanager
def serving(fake: FakeLLM) -> Iterator[FakeLLM]:
    """Serve `fake` on a free loopback port for the duration of the `with` block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.fake = fake
    with running(server) as port:
        fake.port = port
        yield fake
