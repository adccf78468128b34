"""The team's page under a big project: 100 stages and 100,000 provenance rows.

Builds the records in a fresh SQLite database (the shapes the service writes: provenance rows over 100 model
versions, a gate record per stage, spend counters, trust checks), serves the backend on 127.0.0.1, and measures
  - the server: GET /ui/projects/<id>, median and worst of 20 (the HTML with its inline SVG charts);
  - a real browser: headless Chromium's wall time to load and dump the page, beside the same for an empty page
    (Chromium's own start-up), so the difference is what the page costs.

    .venv/bin/python bench/ui_bench.py --out docs/bench-ui.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests
from werkzeug.serving import make_server

from backend.http.app import create_app
from backend.labelstudio.config import project_bundle_key
from backend.settings import Settings
from backend.store import provenance
from backend.store.spend import Resource, Spend
from backend.store.trust import TrustLedger
from model import AutoAnnotatorModel

CONFIG = (Path(__file__).resolve().parent.parent / "samples" / "sentiment.xml").read_text()
LABELS = ["Positive", "Negative", "Neutral"]


def build(data_dir: Path, stages: int, rows: int) -> Settings:
    settings = Settings.from_env({}, data_dir=data_dir, bootstrap_default_bundle=False)
    model = AutoAnnotatorModel(settings, background=False)
    store = model.store
    store.note_project("1", "h", "v", [{"control": "sentiment", "labels": LABELS, "multiple": False,
                                        "bundle_key": "k", "model_version": "v"}], [], CONFIG)
    rng = random.Random(0)
    now = time.time() - stages * 3600
    per = rows // stages
    key_dir = Path(settings.model_dir) / "bundles" / project_bundle_key("1", "sentiment") / "versions"
    with store.engine.begin() as conn:
        for s in range(stages):
            version = f"aa-{s:010d}"
            batch = []
            for t in range(per):
                route = rng.choices(["auto", "llm", "human"], [0.7, 0.2, 0.1])[0]
                label = rng.choice(LABELS)
                batch.append({"project_id": "1", "task_id": s * per + t, "control": "sentiment",
                              "model_version": version, "route": route, "reason": "specialists disagree",
                              "labels": [label], "ensemble_labels": [label], "confidence": rng.random(),
                              "score": rng.random(), "votes": [[label]] * 3,
                              "probabilities": dict.fromkeys(LABELS, 1 / 3),
                              "llm": {"status": "valid", "verdict": label, "raw": label, "cost_usd": 1e-5}
                              if route == "llm" else None, "created_at": now + s * 3600})
            conn.execute(provenance.insert(), batch)
            d = key_dir / version
            d.mkdir(parents=True, exist_ok=True)
            (d / "gate.json").write_text(json.dumps({"candidate_macro_f1": 0.6 + 0.003 * s, "current_macro_f1":
                                                     0.6 + 0.003 * (s - 1) if s else None, "holdout": 40 + s,
                                                     "promoted": s % 4 != 3, "reason": "macro-F1 on held-out items"}))
            os.utime(d / "gate.json", (now + s * 3600, now + s * 3600))
    spend = Spend(store.engine)
    spend.add("1", Resource.TASKS, rows)
    spend.add("1", Resource.LLM_CALLS, rows // 5)
    spend.add("1", Resource.LLM_USD, rows / 5 * 1e-5)
    trust = TrustLedger(store.engine)
    for t in range(600):
        label = LABELS[t % 3]
        trust.record("1", "sentiment", "gpt-4o-mini", t, label, label if t % 10 else LABELS[(t + 1) % 3], label)
    settings = settings.with_(llm_model="gpt-4o-mini")
    store.engine.dispose()
    return settings


def chromium_seconds(url: str, profile: Path, times: int = 5) -> list[float]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        subprocess.run([binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        f"--user-data-dir={profile}", "--dump-dom", url], capture_output=True, check=True, timeout=120)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stages", type=int, default=100)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--out")
    args = ap.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="aa-ui-bench-"))
    try:
        t0 = time.perf_counter()
        settings = build(work, args.stages, args.rows)
        built = time.perf_counter() - t0
        app = create_app(settings, AutoAnnotatorModel(settings, background=False))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}"
        page = f"{url}/ui/projects/1"
        requests.get(page, timeout=60).raise_for_status()  # warm: imports, first queries
        server_s = []
        for _ in range(20):
            t1 = time.perf_counter()
            r = requests.get(page, timeout=60)
            server_s.append(time.perf_counter() - t1)
            r.raise_for_status()
        blank = chromium_seconds(f"{url}/health", work / "profile")
        full = chromium_seconds(page, work / "profile")
        server.shutdown()
        result = {
            "stages": args.stages, "provenance_rows": args.rows, "build_seconds": round(built, 1),
            "html_bytes": len(r.content),
            "server_median_s": round(statistics.median(server_s), 4), "server_max_s": round(max(server_s), 4),
            "chromium_page_median_s": round(statistics.median(full), 3),
            "chromium_blank_median_s": round(statistics.median(blank), 3),
            "page_cost_in_browser_s": round(statistics.median(full) - statistics.median(blank), 3),
            "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}",
        }
        print(json.dumps(result, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
