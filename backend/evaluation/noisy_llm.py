"""A noisy oracle behind a real OpenAI-compatible HTTP endpoint on 127.0.0.1: an LLM of known quality.

It answers the gold label of the text it is asked about with probability P; otherwise it is wrong, and its errors
lean to one class (`skew`, 80 % of the errors where the gold is another class), as a real LLM's do. The service
reaches it through its own client, prompt, parser, budgets and trust ledger, so `evaluate --reviewer noisy-llm:P`
measures what an LLM of quality P is worth to a project, and whether the ledger finds P. Every run says it is a
simulation. The answer for a text is fixed by a hash of (seed, text): asking twice gives the same answer.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SKEW_SHARE = 0.8


@dataclass
class NoisyOracle:
    gold: Mapping[str, str]
    labels: Sequence[str]
    accuracy: float
    skew: str | None = None
    seed: int = 0
    port: int = 0
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def answer(self, text: str) -> str:
        """The gold label with probability `accuracy`, else a wrong one leaning to `skew`; "abstain" for an
        unknown text."""
        truth = self.gold.get(text)
        if truth is None:
            return "abstain"
        rng = random.Random(int.from_bytes(hashlib.sha256(f"{self.seed}:{text}".encode()).digest()[:8], "big"))
        if rng.random() < self.accuracy:
            return truth
        wrong = [x for x in self.labels if x != truth]
        if not wrong:
            return truth
        if self.skew in wrong and rng.random() < SKEW_SHARE:
            return self.skew
        return rng.choice(wrong)


def _text_of(body: dict[str, Any]) -> str:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return (users[-1] if users else "").removeprefix("Text: ")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        except json.JSONDecodeError:
            body = {}
        oracle = self.server.oracle
        with oracle._lock:
            oracle.requests += 1
        label = oracle.answer(_text_of(body))
        content = json.dumps({"label": label})
        prompt = max(sum(len(str(m.get("content", "")).split()) for m in body.get("messages", [])), 1)
        data = json.dumps({
            "id": f"chatcmpl-{oracle.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "noisy-oracle"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 4, "total_tokens": prompt + 4},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    oracle: NoisyOracle


@contextmanager
def serving(oracle: NoisyOracle) -> Iterator[NoisyOracle]:
    """Serve the oracle on a free loopback port while the block runs."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.oracle = oracle
    oracle.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield oracle
    finally:
        server.shutdown()
        server.server_close()


def parse_spec(spec: str) -> tuple[float, str | None]:
    """"noisy-llm:P" or "noisy-llm:P:SKEW" → (P, skew class or None)."""
    parts = spec.split(":", 2)
    try:
        p = float(parts[1])
    except (IndexError, ValueError):
        raise ValueError(f"--reviewer {spec!r}: expected noisy-llm:P (e.g. noisy-llm:0.7) or noisy-llm:P:CLASS"
                         ) from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"--reviewer {spec!r}: P must lie within [0, 1]")
    return p, (parts[2] if len(parts) > 2 and parts[2] else None)
