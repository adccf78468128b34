"""The feature store's writes and reads side by side with an earlier commit's.

Each tree, in its own process and file, fills a store with `--rows` rows of one encoder space (MiniLM's three pooled
layers: 4.6 KiB a row), then writes `--batches` batches of 512 new rows (what a cold /predict of 512 tasks stores for
the encoder) and reads 10,000 known rows three times. The earlier commit runs from a `git archive` of it with this
venv; rounds alternate the two. ≈ 2 minutes on 2 cores with the defaults.

    .venv/bin/python bench/feature_store_bench.py --baseline 7dc38e9 --out docs/bench-feature-store.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import REPO, machine, unpack, write_report

_DIM = 3 * 384
_BATCH = 512


def measure(rows: int, batches: int, folder: Path) -> dict[str, Any]:
    """One tree's figures (run in a worker process whose sys.path starts at that tree)."""
    from backend.specialists.feature_store import FeatureStore

    rng = np.random.default_rng(0)

    def compute(part: list[str]) -> np.ndarray:
        return rng.standard_normal((len(part), _DIM)).astype(np.float32)

    store = FeatureStore(folder / "features.sqlite", 64 * 2**30)
    t0 = time.perf_counter()
    for start in range(0, rows, 4096):
        store.dense("enc", _DIM, [f"known {i}" for i in range(start, min(start + 4096, rows))], compute)
    fill = time.perf_counter() - t0
    writes = []
    for b in range(batches):
        texts = [f"new {b} {i}" for i in range(_BATCH)]
        t0 = time.perf_counter()
        store.dense("enc", _DIM, texts, compute)
        writes.append(time.perf_counter() - t0)
    known = [f"known {i}" for i in rng.choice(rows, min(rows, 10_000), replace=False)]
    reads = []
    for _ in range(3):
        t0 = time.perf_counter()
        store.dense("enc", _DIM, known, compute)
        reads.append(time.perf_counter() - t0)
    return {"fill_s": round(fill, 2), "write_512_ms": [round(w * 1000, 1) for w in writes],
            "read_10k_ms": [round(r * 1000, 1) for r in reads],
            "file_mb": round((folder / "features.sqlite").stat().st_size / 2**20, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="the earlier commit")
    p.add_argument("--rows", type=int, default=100_000, help="rows in the store before the timed writes")
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path)
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)  # the tree to measure, in this process
    args = p.parse_args()
    if args.worker:
        sys.path.insert(0, str(args.worker))
        with tempfile.TemporaryDirectory(prefix="aa-store-") as tmp:
            print(json.dumps(measure(args.rows, args.batches, Path(tmp))))
        return 0
    report: dict[str, Any] = {"benchmark": "feature-store", "command": " ".join([Path(sys.executable).name, *sys.argv]),
                              "machine": machine(), "rows": args.rows, "trees": {}}
    with tempfile.TemporaryDirectory(prefix="aa-store-tree-") as tmp:
        trees = {"baseline": unpack(args.baseline, Path(tmp)), "this tree": REPO}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        env = {**os.environ, "PYTHONPATH": ""}
        for round_ in range(args.rounds):
            for name in (list(trees) if round_ % 2 == 0 else list(reversed(trees))):
                out = subprocess.run([sys.executable, __file__, "--baseline", args.baseline, "--rows", str(args.rows),
                                      "--batches", str(args.batches), "--worker", str(trees[name])],
                                     cwd=trees[name], env=env, check=True, capture_output=True, text=True)
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"round {round_ + 1} {name:>9}: {runs[name][-1]}", flush=True)
    for name, rs in runs.items():
        report["trees"][name] = {
            "fill_s_median": float(np.median([r["fill_s"] for r in rs])),
            "write_512_ms_median": float(np.median([w for r in rs for w in r["write_512_ms"]])),
            "read_10k_ms_median": float(np.median([x for r in rs for x in r["read_10k_ms"]])),
            "file_mb": rs[-1]["file_mb"], "rounds": rs}
    base, new = report["trees"]["baseline"], report["trees"]["this tree"]
    report["write_speedup"] = round(base["write_512_ms_median"] / new["write_512_ms_median"], 2)
    report["read_speedup"] = round(base["read_10k_ms_median"] / new["read_10k_ms_median"], 2)
    report["fill_speedup"] = round(base["fill_s_median"] / new["fill_s_median"], 2)
    print(json.dumps({k: v for k, v in report.items() if k in ("write_speedup", "read_speedup", "fill_speedup")}))
    return write_report(args.out, report)


if __name__ == "__main__":
    raise SystemExit(main())
