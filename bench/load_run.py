"""Sustained mixed traffic against our gunicorn backend: does it keep up, answer every request, and
hold its memory flat?

Open loop on purpose: requests fire at scheduled times (a thread pool sends each one at its slot)
whether or not earlier ones have answered, as Label Studio's users and webhooks do. A closed-loop
client slows down with the server and hides queueing; here a slow server shows as latency measured
from the scheduled time. The pool is bounded and the run stops by itself after --duration.

Mix: ≈70% POST /predict with 1-8 real tweets, ≈30% POST /webhook with the captured
ANNOTATION_CREATED body (each committed to SQLite before the answer). RSS of the gunicorn
process tree is sampled every second from /proc/<pid>/status.

    .venv/bin/python bench/load_run.py --out docs/bench-load.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from benchlib import (
    CAPTURED,
    JSON_HEADERS,
    LABEL_CONFIG_FILE,
    Server,
    ensure_bundle,
    env_pairs,
    latency_summary,
    load_texts,
    machine,
    parent_of,
    predict_body,
    process_tree,
    rss_kib,
)


@dataclass
class Shot:
    """One planned request and, once sent, what happened."""

    index: int
    endpoint: str
    tasks: int
    body: bytes
    scheduled: float = 0.0
    sent: float = 0.0
    done: float = 0.0
    status: int = 0
    error: str = ""


def annotation_event() -> dict[str, Any]:
    """The ANNOTATION_CREATED body Label Studio really sent (captured, in tests/fixtures)."""
    return json.loads(CAPTURED.read_text())["POST /webhook ANNOTATION_CREATED"]["body"]


def plan(n: int, predict_share: float, max_tasks: int, texts: list[str], seed: int) -> list[Shot]:
    """The whole request sequence, built and serialised before the clock starts (seeded: repeatable)."""
    rng = random.Random(seed)
    label_config = LABEL_CONFIG_FILE.read_text()
    event = annotation_event()
    shots, cursor = [], 0
    for i in range(n):
        if rng.random() < predict_share:
            k = rng.randint(1, max_tasks)
            batch = [texts[(cursor + j) % len(texts)] for j in range(k)]
            cursor += k
            shots.append(Shot(i, "/predict", k, predict_body(batch, cursor, label_config)))
        else:
            body = copy.deepcopy(event)
            text = texts[cursor % len(texts)]
            cursor += 1
            body["annotation"]["id"] = body["annotation"]["task"] = 100_000 + i
            body["task"]["id"] = 100_000 + i
            body["task"]["data"] = {"text": text}
            body["annotation"]["result"][0]["value"]["choices"] = [rng.choice(["Positive", "Negative", "Neutral"])]
            shots.append(Shot(i, "/webhook", 0, json.dumps(body).encode()))
    return shots


class RssSampler(threading.Thread):
    """Every `period` seconds: VmRSS (KiB) of the gunicorn master and each worker."""

    def __init__(self, root: int, period: float = 1.0):
        super().__init__(daemon=True)
        self.root, self.period = root, period
        self.samples: list[dict[str, Any]] = []
        self._stop_event = threading.Event()
        self.t0 = time.perf_counter()

    def sample(self) -> None:
        rss = {pid: kib for pid in process_tree(self.root) if (kib := rss_kib(pid)) is not None}
        # Direct children are gunicorn workers; deeper ones are training processes they started.
        workers = [pid for pid in rss if pid != self.root and parent_of(pid) == self.root]
        self.samples.append({"t": round(time.perf_counter() - self.t0, 1), "rss_kib": rss, "workers": workers})

    def run(self) -> None:
        while not self._stop_event.wait(self.period):
            self.sample()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.sample()

    def summary(self) -> dict[str, Any]:
        """start/end/max MiB for the master, the workers together, and the whole tree."""
        def series(select: Any) -> dict[str, float]:
            values = [sum(kib for pid, kib in s["rss_kib"].items() if select(pid, s)) / 1024 for s in self.samples]
            return {"start_mib": round(values[0], 1), "end_mib": round(values[-1], 1), "max_mib": round(max(values), 1),
                    "min_mib": round(min(values), 1)}

        workers = sorted({pid for s in self.samples for pid in s["workers"]})
        return {"samples": len(self.samples), "period_s": self.period, "worker_pids": workers,
                "workers": series(lambda pid, s: pid in s["workers"]),
                "training": series(lambda pid, s: pid != self.root and pid not in s["workers"]),
                "master": series(lambda pid, s: pid == self.root), "tree": series(lambda pid, s: True)}


def fire(shot: Shot, url: str, local: threading.local, timeout: float, give_up_at: float = float("inf")) -> None:
    """Send one shot; one still waiting for a client thread at give_up_at is counted as an error, not sent."""
    if time.perf_counter() > give_up_at:
        shot.sent = shot.done = time.perf_counter()
        shot.error = "not sent: still queued at the drain deadline (server overloaded)"
        return
    session = getattr(local, "session", None)
    if session is None:
        session = local.session = requests.Session()
    shot.sent = time.perf_counter()
    try:
        resp = session.post(url + shot.endpoint, data=shot.body, headers=JSON_HEADERS, timeout=timeout)
        shot.status = resp.status_code
        if shot.endpoint == "/predict" and resp.ok and len(resp.json()["results"]) != shot.tasks:
            shot.error = "wrong number of results"
    except (requests.RequestException, ValueError, KeyError) as exc:
        shot.error = f"{type(exc).__name__}: {exc}"[:200]
    shot.done = time.perf_counter()


def run(url: str, shots: list[Shot], rate: float, pool_size: int, timeout: float, grace: float) -> float:
    """Send shot i at t0 + i/rate from a bounded pool; returns t0.

    A shot whose slot finds every thread busy waits for one (its latency counts from the slot). The run
    is bounded: shots still waiting `grace` seconds after the last slot are given up (and counted as
    errors), and each request has `timeout`, so it ends by duration + grace + timeout at the latest.
    """
    local = threading.local()
    with ThreadPoolExecutor(max_workers=pool_size, thread_name_prefix="shot") as pool:
        t0 = time.perf_counter() + 0.2
        give_up_at = t0 + len(shots) / rate + grace
        for shot in shots:
            shot.scheduled = t0 + shot.index / rate
            delay = shot.scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(fire, shot, url, local, timeout, give_up_at)
    return t0


def report(shots: list[Shot], t0: float, rate: float, duration: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for endpoint in ("/predict", "/webhook", "all"):
        mine = [s for s in shots if endpoint in ("all", s.endpoint)]
        bad = [s for s in mine if s.error or not 200 <= s.status < 300]
        out[endpoint] = {
            "count": len(mine),
            "errors": len(bad),
            "error_examples": sorted({s.error or f"HTTP {s.status}" for s in bad})[:5],
            "tasks": sum(s.tasks for s in mine),
            # From the scheduled time: includes any wait for a free client thread (no coordinated omission).
            "latency": latency_summary([s.done - s.scheduled for s in mine]),
            "service_latency": latency_summary([s.done - s.sent for s in mine]),
        }
    last_done = max(s.done for s in shots)
    out["offered_rate_per_s"] = rate
    out["achieved_rate_per_s"] = round(len(shots) / (last_done - t0), 2)
    out["send_lag_ms"] = latency_summary([max(0.0, s.sent - s.scheduled) for s in shots])
    out["wall_s"] = round(last_done - t0, 2)
    out["planned_s"] = duration
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    p.add_argument("--rate", type=float, default=50.0, help="requests per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    p.add_argument("--predict-share", type=float, default=0.7)
    p.add_argument("--max-tasks", type=int, default=8, help="a /predict carries 1..max-tasks tasks")
    p.add_argument("--pool", type=int, default=64, help="client threads: the most requests in flight")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (seconds)")
    p.add_argument("--grace", type=float, default=20.0,
                   help="seconds after the last slot before still-queued shots are dropped")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data-dir", type=Path, help="DATA_DIR with a trained bundle (default: a temp dir, trained)")
    p.add_argument("--texts", type=Path, help="one text a line (default: the TweetEval sentiment test tweets)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--server-env", action="append", metavar="KEY=VALUE",
                   help="extra environment for the server, e.g. MALLOC_ARENA_MAX=2 (repeatable)")
    args = p.parse_args()

    texts = load_texts(args.texts)
    shots = plan(int(args.rate * args.duration), args.predict_share, args.max_tasks, texts, args.seed)
    result: dict[str, Any] = {"benchmark": "load", "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine(),
                              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    with ExitStack() as stack:
        # A training child the server started may still be writing there when the server is stopped.
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aa-load-", ignore_cleanup_errors=True)))
        log = stack.enter_context((tmp / "server.log").open("w"))
        data_dir = args.data_dir or tmp / "data"
        ensure_bundle(data_dir, log)
        server = Server.ours(data_dir, args.workers, args.threads, log)
        server.env.update(env_pairs(args.server_env))
        stack.enter_context(server)
        sampler = RssSampler(server.pid)
        sampler.sample()
        rss_before_warm = sampler.samples[-1]
        warmup = plan(12, 0.75, args.max_tasks, texts[::-1], args.seed + 1)
        for shot in warmup:  # loads the ensemble in every worker that gets one; not counted
            fire(shot, server.url, threading.local(), args.timeout)
        db = data_dir / "autoannotator.db"
        events_before = _count_events(db)
        sampler.samples.clear()
        sampler.t0 = time.perf_counter()
        sampler.start()
        print(f"{len(shots)} requests at {args.rate}/s for {args.duration}s against {server.url} "
              f"(gunicorn pid {server.pid})", flush=True)
        t0 = run(server.url, shots, args.rate, args.pool, args.timeout, args.grace)
        sampler.stop()
        result["results"] = report(shots, t0, args.rate, args.duration)
        result["rss"] = sampler.summary() | {"before_warmup_kib": rss_before_warm["rss_kib"],
                                             "series": sampler.samples}
        sent_webhooks = sum(1 for s in shots if s.endpoint == "/webhook")
        result["results"]["webhook_events_stored"] = _count_events(db) - events_before
        result["results"]["webhook_events_sent"] = sent_webhooks
        result["training_jobs"] = _training_jobs(db)
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_report(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 1 if result["results"]["all"]["errors"] else 0


def _count_events(db: Path) -> int:
    """Rows in webhook_events: every webhook must be durably stored."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM webhook_events").fetchone()[0])


def _training_jobs(db: Path) -> dict[str, int]:
    """Continual-learning jobs the webhooks triggered, by status (they run inside the server when no Redis)."""
    try:
        with sqlite3.connect(db) as conn:
            return dict(conn.execute("SELECT status, count(*) FROM training_jobs GROUP BY status").fetchall())
    except sqlite3.Error:
        return {}


def print_report(result: dict[str, Any]) -> None:
    r = result["results"]
    print("\nendpoint   count  errors   p50 ms   p95 ms   p99 ms   max ms")
    for endpoint in ("/predict", "/webhook", "all"):
        e, lat = r[endpoint], r[endpoint]["latency"]
        print(f"{endpoint:<9} {e['count']:>6} {e['errors']:>7} {lat['p50_ms']:>8} {lat['p95_ms']:>8} "
              f"{lat['p99_ms']:>8} {lat['max_ms']:>8}")
    print(f"offered {r['offered_rate_per_s']}/s, achieved {r['achieved_rate_per_s']}/s over {r['wall_s']} s; "
          f"send lag p99 {r['send_lag_ms']['p99_ms']} ms; webhooks stored {r['webhook_events_stored']}"
          f"/{r['webhook_events_sent']}")
    print(f"training jobs triggered by the webhooks, by status: {result['training_jobs']}")
    rss = result["rss"]
    for part in ("workers", "training", "master", "tree"):
        x = rss[part]
        print(f"RSS {part:<7}: start {x['start_mib']} MiB, end {x['end_mib']} MiB, max {x['max_mib']} MiB")


if __name__ == "__main__":
    sys.exit(main())
