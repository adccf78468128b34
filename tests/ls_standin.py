"""A tiny in-process stand-in for the few Label Studio endpoints the asynchronous review writes to.

Only for unit tests, where a real Label Studio cannot be started (the e2e suite runs against a real 1.23.2). It
keeps tasks and predictions in memory, answers like Label Studio's API (the shapes the SDK parses), and can be
switched to answer 503 to play an unreachable Label Studio.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.loopback import running

_NOW = "2025-01-01T00:00:00Z"


@dataclass
class StandInLS:
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    predictions: dict[int, dict[str, Any]] = field(default_factory=dict)
    down: bool = False
    calls: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_task(self, task_id: int, data: dict[str, Any]) -> None:
        self.tasks[task_id] = {"id": task_id, "data": dict(data), "project": 1, "created_at": _NOW,
                               "updated_at": _NOW}

    def task_predictions(self, task_id: int) -> list[dict[str, Any]]:
        return [p for p in self.predictions.values() if p["task"] == task_id]

    def prediction(self, body: dict[str, Any], pid: int) -> dict[str, Any]:
        return {"id": pid, "task": body["task"], "result": body.get("result") or [], "score": body.get("score"),
                "model_version": body.get("model_version"), "created_at": _NOW, "updated_at": _NOW,
                "created_ago": "0 minutes", "project": 1}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, payload: Any = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0") or 0))
        return json.loads(raw) if raw else {}

    def _handle(self, method: str) -> None:
        ls = self.server.ls
        url = urlparse(self.path)
        body = self._body() if method in ("POST", "PATCH") else None
        with ls._lock:
            ls.calls.append((method, url.path))
            if ls.down:
                self._send(503, {"detail": "stand-in is down"})
                return
            if self.headers.get("Authorization") != "Token standin-token":
                self._send(401, {"detail": "bad token"})
                return
            m = re.fullmatch(r"/api/tasks/(\d+)/?", url.path)
            if m and int(m.group(1)) in ls.tasks:
                task = ls.tasks[int(m.group(1))]
                if method == "PATCH":
                    task["data"] = body.get("data", task["data"])
                self._send(200, task)
                return
            if url.path.rstrip("/") == "/api/predictions":
                if method == "GET":
                    tid = int(parse_qs(url.query)["task"][0])
                    self._send(200, ls.task_predictions(tid))
                    return
                if method == "POST":
                    pid = max(ls.predictions, default=0) + 1
                    ls.predictions[pid] = ls.prediction(body, pid)
                    self._send(201, ls.predictions[pid])
                    return
            m = re.fullmatch(r"/api/predictions/(\d+)/?", url.path)
            if m and int(m.group(1)) in ls.predictions:
                pid = int(m.group(1))
                if method == "DELETE":
                    del ls.predictions[pid]
                    self._send(204)
                    return
                if method == "PATCH":
                    ls.predictions[pid].update({k: v for k, v in body.items() if k in ("result", "score",
                                                                                         "model_version")})
                self._send(200, ls.predictions[pid])
                return
            self._send(404, {"detail": f"stand-in has no {method} {url.path}"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    ls: StandInLS


@contextmanager
def standin(ls: StandInLS) -> Iterator[StandInLS]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.ls = ls
    with running(server) as port:
        ls.port = port
        yield ls
