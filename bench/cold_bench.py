"""The cold path side by side: this tree's server against an earlier commit's, over real HTTP, in one run.

Both servers are `autoannotator serve` (1 worker x 8 threads) with the default bundle, each trained by its own code
into its own data dir; the earlier commit runs from a `git archive` of it with this venv. Rounds alternate between
them (the order flips each round), so the machine's drift falls on both alike. Each round sends every server the
same texts, none seen before by it:

* `--requests` sequential /predict requests of `--batch` distinct tasks (tasks/s);
* `--single` sequential requests of one task (p50 / p95), then the same tasks again (known to the feature store).

It also prints how often the two servers gave the same label to the same text, which is how far a change to the
models' numerics moved the labels. ≈ 4 minutes on 2 cores with the defaults.

    EVAL_DATA=... .venv/bin/python bench/cold_bench.py --baseline 5fc69ac --out docs/bench-cold.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import requests
from benchlib import (
    JSON_HEADERS,
    LABEL_CONFIG_FILE,
    REPO,
    Server,
    ensure_bundle,
    latency_summary,
    load_texts,
    machine,
    predict_body,
    unpack,
)


def labels_of(response: dict[str, Any]) -> list[str | None]:
    out: list[str | None] = []
    for pred in response["results"]:
        choice = next((r["value"]["choices"][0] for r in pred.get("result", []) if r.get("type") == "choices"), None)
        out.append(choice)
    return out


def post(session: requests.Session, url: str, texts: list[str], first_id: int,
         label_config: str) -> tuple[float, list[str | None]]:
    body = predict_body(texts, first_id, label_config)
    t0 = time.perf_counter()
    resp = session.post(url + "/predict", data=body, headers=JSON_HEADERS, timeout=600)
    took = time.perf_counter() - t0
    if resp.status_code != 200:
        raise SystemExit(f"{url}/predict answered {resp.status_code}: {resp.text[:300]}")
    return took, labels_of(resp.json())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="the earlier commit to compare with (e.g. 5fc69ac)")
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--requests", type=int, default=4, help="batched requests per server and round")
    p.add_argument("--single", type=int, default=100, help="one-task requests per server and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--texts", type=Path, help="one text a line (default: TweetEval sentiment test)")
    args = p.parse_args()

    texts = list(dict.fromkeys(load_texts(args.texts)))
    label_config = LABEL_CONFIG_FILE.read_text()
    per_round = args.requests * args.batch + args.single
    warmup = args.batch + 20
    if warmup + args.rounds * per_round > len(texts):
        raise SystemExit(f"{len(texts)} distinct texts; the run needs {warmup + args.rounds * per_round}")
    report: dict[str, Any] = {"benchmark": "cold", "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine(), "config": {k: str(v) for k, v in vars(args).items()}}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aa-cold-")))
        log = stack.enter_context((tmp / "servers.log").open("w"))
        trees = {"baseline": unpack(args.baseline, tmp), "this tree": REPO}
        servers: dict[str, Server] = {}
        for name, tree in trees.items():
            ensure_bundle(tmp / name / "data", log, tree=tree)
            server = Server.ours(tmp / name / "data", 1, 8, log, tree=tree)
            servers[name] = stack.enter_context(server)
            with requests.Session() as s:  # loads the ensemble (lazy) and warms every path
                post(s, server.url, texts[:args.batch], 1, label_config)
                for i in range(20):
                    post(s, server.url, texts[args.batch + i:args.batch + i + 1], 1, label_config)
        print("servers: " + ", ".join(f"{n} on {s.url}" for n, s in servers.items()), flush=True)

        results: dict[str, dict[str, Any]] = {n: {"batched_s": [], "single_s": [], "known_s": [], "labels": []}
                                           for n in servers}
        for r in range(args.rounds):
            chunk = texts[warmup + r * per_round: warmup + (r + 1) * per_round]
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            for name in order:
                url, res = servers[name].url, results[name]
                with requests.Session() as s:
                    took = 0.0
                    for q in range(args.requests):
                        part = chunk[q * args.batch:(q + 1) * args.batch]
                        seconds, labels = post(s, url, part, 10_000 + q * args.batch, label_config)
                        took += seconds
                        res["labels"].extend(labels)
                    res["batched_s"].append(took)
                    for i in range(args.single):
                        seconds, labels = post(s, url, [chunk[args.requests * args.batch + i]], 1, label_config)
                        res["single_s"].append(seconds)
                        res["labels"].extend(labels)
                    for i in range(args.single):  # the same tasks again: known to a server that keeps features
                        seconds, _ = post(s, url, [chunk[args.requests * args.batch + i]], 1, label_config)
                        res["known_s"].append(seconds)
                rate = args.requests * args.batch / took
                print(f"round {r + 1} {name:>9}: batch {args.batch} {rate:7.1f} tasks/s, one task p50 "
                      f"{np.median(res['single_s'][-args.single:]) * 1000:.1f} ms, again "
                      f"{np.median(res['known_s'][-args.single:]) * 1000:.1f} ms", flush=True)

    summary: dict[str, Any] = {}
    for name, res in results.items():
        rates = [args.requests * args.batch / s for s in res["batched_s"]]
        summary[name] = {"tasks_per_s_rounds": [round(x, 1) for x in rates],
                         "tasks_per_s_median": round(float(np.median(rates)), 1),
                         "single_task": latency_summary(res["single_s"]),
                         "single_task_again": latency_summary(res["known_s"])}
    base, ours = results["baseline"]["labels"], results["this tree"]["labels"]
    same = sum(a == b for a, b in zip(base, ours, strict=True))
    summary["speedup_median"] = round(summary["this tree"]["tasks_per_s_median"]
                                      / summary["baseline"]["tasks_per_s_median"], 3)
    summary["label_agreement"] = {"texts": len(base), "same": same, "share": round(same / len(base), 5)}
    report["summary"] = summary
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
