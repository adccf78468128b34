"""A "Retrieve predictions" of 10,000 long tasks over real HTTP: how long until /predict answers, and what it left.

Label Studio sends every selected task in one /predict and keeps nothing once ML_TIMEOUT_PREDICT (100 s) passes. One
run starts `autoannotator serve` (1 worker, the default bundle, PREDICT_SECONDS at its default unless --server-env
says otherwise, no Label Studio URL: what is left is computed into the feature store) and measures

* the first /predict of --tasks never-seen texts of about --chars characters each (tweets joined, a fresh tag
  each): seconds to the answer, tasks answered, tasks left;
* how long the server's loop takes to compute what was left (the `pushes` of /jobs);
* the same /predict again: seconds to the answer and tasks answered, now from the store;
* the server's resident memory after each step.

    .venv/bin/python bench/retrieve_bench.py --out docs/bench-retrieve.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

import requests
from benchlib import (
    JSON_HEADERS,
    LABEL_CONFIG_FILE,
    PROJECT,
    Server,
    ensure_bundle,
    env_pairs,
    load_texts,
    machine,
    process_tree,
    rss_kib,
)


def long_texts(tweets: list[str], n: int, chars: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    out = []
    for i in range(n):
        parts, k = [f"{tag}-{i}"], i
        while sum(len(p) + 1 for p in parts) < chars:
            parts.append(tweets[k % len(tweets)])
            k += 7
        out.append(" ".join(parts)[:chars])
    return out


def body(texts: list[str], label_config: str) -> bytes:
    tasks = [{"id": 1 + i, "data": {"text": t}} for i, t in enumerate(texts)]
    return json.dumps({"tasks": tasks, "label_config": label_config, "project": PROJECT,
                       "params": {"login": None, "password": None, "context": None}}).encode()


def rss_mib(server: Server) -> float:
    return round(sum(rss_kib(p) or 0 for p in process_tree(server.pid)) / 1024, 1)


def post(url: str, data: bytes) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    resp = requests.post(url + "/predict", data=data, headers=JSON_HEADERS, timeout=600)
    took = time.perf_counter() - t0
    resp.raise_for_status()
    results = resp.json()["results"]
    return round(took, 2), sum(1 for r in results if r), sum(1 for r in results if not r)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    p.add_argument("--data-dir", type=Path, help="DATA_DIR with a trained bundle (default: a temp dir, trained)")
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--chars", type=int, default=5_000, help="characters per text")
    p.add_argument("--server-env", action="append", metavar="KEY=VALUE", help="e.g. PREDICT_SECONDS=30")
    p.add_argument("--wait", type=float, default=1800.0, help="most seconds to wait for what was left")
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="aa-retrieve-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        log = open(Path(tmp) / "server.log", "w")
        ensure_bundle(data_dir, log)
        server = Server.ours(data_dir, workers=1, threads=4, log=log)
        server.env.update(env_pairs(args.server_env))
        server.start()
        try:
            label_config = LABEL_CONFIG_FILE.read_text()
            requests.post(server.url + "/predict", data=body(["warm the models up"], label_config),
                          headers=JSON_HEADERS, timeout=300).raise_for_status()
            texts = long_texts(load_texts(), args.tasks, args.chars)
            data = body(texts, label_config)
            report: dict = {"machine": machine(), "tasks": args.tasks, "chars_per_text": args.chars,
                            "request_mib": round(len(data) / 2**20, 1), "server_env": env_pairs(args.server_env),
                            "rss_mib_before": rss_mib(server)}
            took, answered, left = post(server.url, data)
            report["first"] = {"seconds": took, "answered": answered, "left": left, "rss_mib": rss_mib(server)}
            print(f"first /predict: {took} s, {answered} answered, {left} left", flush=True)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < args.wait:
                runs = requests.get(server.url + "/jobs", timeout=30).json()["pushes"]
                if not runs or all(r["state"] != "running" for r in runs):
                    break
                time.sleep(2)
            done = sum(r["done"] for r in runs)
            report["left_computed"] = {"seconds": round(time.perf_counter() - t0, 1), "tasks": done,
                                       "rss_mib": rss_mib(server)}
            print(f"what was left: {done} tasks computed in {report['left_computed']['seconds']} s", flush=True)
            took, answered, left = post(server.url, data)
            report["again"] = {"seconds": took, "answered": answered, "left": left, "rss_mib": rss_mib(server)}
            print(f"same /predict again: {took} s, {answered} answered, {left} left", flush=True)
        finally:
            server.stop()
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
