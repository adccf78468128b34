"""/predict speed over real HTTP: our gunicorn backend against the per-request-pipeline baseline.

One run starts both servers (ours: `autoannotator serve`, 1 worker x 8 threads; the baseline:
bench/baseline_server.py, the HumanSignal bert_classifier pattern) and measures

* single-task latency p50/p95 of ours over warm sequential requests;
* ours tasks/s at batch 1, 32 and 256, with a sequential client and a small concurrent client;
* the ratio to the baseline, measured interleaved in rounds (baseline requests, then ours) because the
  machine is shared and its load drifts over minutes: a ratio of two figures taken minutes apart would
  mostly measure the drift.

Every request carries distinct real tweets, so no cache can answer it. Defaults take about 2 minutes
on 2 cores (plus ≈15 s to train the bundle when --data-dir has none).

    .venv/bin/python bench/predict_bench.py --out docs/bench-predict.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from benchlib import (
    BENCH,
    JSON_HEADERS,
    LABEL_CONFIG_FILE,
    Server,
    bench_env,
    cpu_seconds,
    ensure_bundle,
    env_pairs,
    free_port,
    latency_summary,
    load_texts,
    machine,
    predict_body,
    process_tree,
)

TARGETS = {"batched_tasks_per_s": 500.0, "single_task_p50_ms": 20.0, "speedup_vs_per_request_pipeline": 20.0}


class BodyPool:
    """Pre-serialised /predict bodies of one batch size over successive tweets (the client stays cheap)."""

    def __init__(self, texts: list[str], batch: int, label_config: str, count: int):
        cycle = itertools.cycle(texts)
        self.batch = batch
        self.bodies = [predict_body([next(cycle) for _ in range(batch)], i * batch, label_config)
                       for i in range(count)]
        self._next = itertools.count()
        self._lock = threading.Lock()

    def take(self) -> bytes:
        with self._lock:
            return self.bodies[next(self._next) % len(self.bodies)]


@dataclass
class Tally:
    """Requests, tasks and per-request latencies gathered by one or more client threads."""

    requests: int = 0
    tasks: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, tasks: int, ok: bool) -> None:
        with self.lock:
            self.requests += 1
            self.latencies.append(seconds)
            if ok:
                self.tasks += tasks
            else:
                self.errors += 1


def post_predict(session: requests.Session, url: str, body: bytes, batch: int) -> tuple[float, bool]:
    """One /predict; ok means 200 and one result per task."""
    t0 = time.perf_counter()
    try:
        resp = session.post(url + "/predict", data=body, headers=JSON_HEADERS, timeout=120)
        ok = resp.status_code == 200 and len(resp.json()["results"]) == batch
    except (requests.RequestException, ValueError, KeyError):
        ok = False
    return time.perf_counter() - t0, ok


def run_load(url: str, pool: BodyPool, concurrency: int, *, seconds: float | None = None,
             requests_total: int | None = None, server_pid: int | None = None) -> dict[str, Any]:
    """Closed-loop clients: each thread sends its next request when the previous one answered."""
    tally = Tally()
    start = time.perf_counter()
    deadline = start + seconds if seconds else float("inf")
    budget = itertools.count()
    pids = process_tree(server_pid) if server_pid else []
    cpu0 = cpu_seconds(pids)

    def client() -> None:
        with requests.Session() as session:
            while time.perf_counter() < deadline:
                if requests_total is not None and next(budget) >= requests_total:
                    return
                dt, ok = post_predict(session, url, pool.take(), pool.batch)
                tally.add(dt, pool.batch, ok)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    out: dict[str, Any] = {
        "batch": pool.batch, "concurrency": concurrency, "seconds": round(elapsed, 2), "requests": tally.requests,
        "errors": tally.errors, "tasks": tally.tasks, "tasks_per_s": round(tally.tasks / elapsed, 1),
        "requests_per_s": round((tally.requests - tally.errors) / elapsed, 2),
        "latency": latency_summary(tally.latencies),
    }
    if pids:
        cpu = cpu_seconds(pids) - cpu0
        out["server_cpu_ms_per_task"] = round(1000 * cpu / max(tally.tasks, 1), 3)
        out["server_cpu_cores_busy"] = round(cpu / elapsed, 2)
    return out


def warm(url: str, pool: BodyPool, n: int) -> None:
    with requests.Session() as s:
        for _ in range(n):
            _, ok = post_predict(s, url, pool.take(), pool.batch)
            if not ok:
                raise SystemExit(f"warm-up /predict (batch {pool.batch}) on {url} failed")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    p.add_argument("--data-dir", type=Path, help="DATA_DIR with a trained bundle (default: a temp dir, trained)")
    p.add_argument("--baseline-ckpt", type=Path, help="checkpoint dir for the baseline (default: built in a temp dir)")
    p.add_argument("--texts", type=Path, help="one text a line (default: the TweetEval sentiment test tweets)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per throughput measurement")
    p.add_argument("--latency-requests", type=int, default=300, help="warm single-task requests for p50/p95")
    p.add_argument("--concurrency", type=int, default=4, help="client threads of the concurrent client")
    p.add_argument("--rounds", type=int, default=3, help="interleaved baseline/ours rounds for the ratio")
    p.add_argument("--baseline-requests", type=int, default=15, help="baseline requests per round")
    p.add_argument("--ratio-seconds", type=float, default=4.0, help="seconds of ours per round and mode")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--server-env", action="append", metavar="KEY=VALUE",
                   help="extra environment for both servers, e.g. OMP_NUM_THREADS=1 (repeatable)")
    args = p.parse_args()

    texts = load_texts(args.texts)
    label_config = LABEL_CONFIG_FILE.read_text()
    report: dict[str, Any] = {"benchmark": "predict", "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine(), "targets": TARGETS,
                              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aa-bench-")))
        log = stack.enter_context((tmp / "servers.log").open("w"))
        data_dir = args.data_dir or tmp / "data"
        ensure_bundle(data_dir, log)
        ckpt = args.baseline_ckpt or tmp / "baseline-ckpt"
        if not (ckpt / "config.json").exists():
            subprocess.run([sys.executable, str(BENCH / "baseline_server.py"), "build", str(ckpt)], env=bench_env(),
                           stdout=log, stderr=log, check=True)
        extra = env_pairs(args.server_env)
        ours = Server.ours(data_dir, args.workers, args.threads, log)
        ours.env.update(extra)
        stack.enter_context(ours)
        port = free_port()
        cmd = [sys.executable, str(BENCH / "baseline_server.py"), "serve", str(ckpt), "--port", str(port)]
        baseline = stack.enter_context(Server("baseline", cmd, port, bench_env(**extra), log))
        print(f"ours on {ours.url} (pid {ours.pid}), baseline on {baseline.url}", flush=True)

        pools = {b: BodyPool(texts, b, label_config, count) for b, count in ((1, 4000), (32, 200), (256, 40))}
        warm(ours.url, pools[256], 3)  # loads the ensemble (lazy, after gunicorn's fork)
        warm(ours.url, pools[1], 20)
        warm(baseline.url, pools[1], 3)  # first pipeline() pays the imports once; later ones are the pattern

        lat = run_load(ours.url, pools[1], 1, requests_total=args.latency_requests)
        report["ours_single_task_latency"] = lat["latency"] | {"errors": lat["errors"]}
        print(f"ours single task: p50 {lat['latency']['p50_ms']} ms, p95 {lat['latency']['p95_ms']} ms", flush=True)

        table = []
        for batch in (1, 32, 256):
            for conc in (1, args.concurrency):
                row = run_load(ours.url, pools[batch], conc, seconds=args.duration, server_pid=ours.pid)
                table.append(row)
                print(f"ours batch {batch:>3} x{conc}: {row['tasks_per_s']:>8.1f} tasks/s "
                      f"p50 {row['latency']['p50_ms']} ms, errors {row['errors']}", flush=True)
        report["ours_throughput"] = table

        rounds = []
        for r in range(args.rounds):
            base = run_load(baseline.url, pools[1], 1, requests_total=args.baseline_requests)
            one = run_load(ours.url, pools[1], 1, seconds=args.ratio_seconds)
            big = run_load(ours.url, pools[256], 1, seconds=args.ratio_seconds)
            rounds.append({"baseline": base, "ours_batch1": one, "ours_batch256": big})
            print(f"round {r + 1}: baseline {base['requests_per_s']} req/s (p50 {base['latency']['p50_ms']} ms), "
                  f"ours batch 1 {one['requests_per_s']} req/s, batch 256 {big['tasks_per_s']} tasks/s", flush=True)
        report["ratio_rounds"] = rounds
        report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]

    report["summary"] = summarise(report)
    print_summary(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    errors = sum(r["errors"] for r in table) + lat["errors"]
    errors += sum(x["errors"] for rd in rounds for x in rd.values())
    return 1 if errors else 0


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """Headline figures and whether each target is met."""
    rounds = report["ratio_rounds"]

    def pooled(key: str, count: str) -> float:
        """A rate over all rounds together: total successes / total seconds."""
        return sum(r[key][count] for r in rounds) / sum(r[key]["seconds"] for r in rounds)

    base_rps = pooled("baseline", "tasks")  # one task per request
    base_lat = [r["baseline"]["latency"]["p50_ms"] for r in rounds]
    ours_rps = pooled("ours_batch1", "tasks")
    ours_256 = pooled("ours_batch256", "tasks")
    best = max(report["ours_throughput"], key=lambda r: r["tasks_per_s"] if r["batch"] > 1 else 0)
    p50 = report["ours_single_task_latency"]["p50_ms"]
    summary = {
        "baseline_req_per_s": round(base_rps, 2),
        "baseline_p50_ms_per_round": base_lat,
        "ours_batch1_req_per_s_interleaved": round(ours_rps, 1),
        "ours_batch256_tasks_per_s_interleaved": round(ours_256, 1),
        "ratio_batch1_req_per_s": round(ours_rps / base_rps, 1),
        "ratio_batch256_tasks_per_s": round(ours_256 / base_rps, 1),
        "ratio_per_round": [round(r["ours_batch1"]["requests_per_s"] / r["baseline"]["requests_per_s"], 1)
                            for r in rounds],
        "best_batched": {"batch": best["batch"], "concurrency": best["concurrency"],
                         "tasks_per_s": best["tasks_per_s"]},
        "single_task_p50_ms": p50,
        "single_task_p95_ms": report["ours_single_task_latency"]["p95_ms"],
    }
    summary["targets_met"] = {
        "batched_tasks_per_s": best["tasks_per_s"] >= TARGETS["batched_tasks_per_s"],
        "single_task_p50_ms": p50 <= TARGETS["single_task_p50_ms"],
        "speedup_vs_per_request_pipeline": summary["ratio_batch1_req_per_s"] >= TARGETS[
            "speedup_vs_per_request_pipeline"],
    }
    return summary


def print_summary(report: dict[str, Any]) -> None:
    print("\nbatch  clients  tasks/s  req/s    p50 ms   p95 ms  errors  server CPU ms/task")
    for r in report["ours_throughput"]:
        lat = r["latency"]
        print(f"{r['batch']:>5}  {r['concurrency']:>7}  {r['tasks_per_s']:>7.1f}  {r['requests_per_s']:>6.1f}  "
              f"{lat['p50_ms']:>7.2f}  {lat['p95_ms']:>7.2f}  {r['errors']:>6}  {r.get('server_cpu_ms_per_task', '')}")
    s = report["summary"]
    print(f"\nsingle task (warm, sequential): p50 {s['single_task_p50_ms']} ms, p95 {s['single_task_p95_ms']} ms")
    print(f"baseline (pipeline per request): {s['baseline_req_per_s']} req/s, "
          f"p50 per round {s['baseline_p50_ms_per_round']} ms")
    print(f"ours/baseline, batch 1 req/s: {s['ratio_batch1_req_per_s']}x (per round {s['ratio_per_round']}); "
          f"batch 256 tasks/s: {s['ratio_batch256_tasks_per_s']}x")
    for name, met in s["targets_met"].items():
        print(f"target {name} >= / <= {TARGETS[name]}: {'met' if met else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
