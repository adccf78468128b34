"""The README's first command on a fresh machine: clone the repo into an empty folder, `make run`, and time it until
the server answers /health with the default bundle loaded. pip's cache is off (a fresh machine has none); the
PyTorch wheel still comes from where pip finds it on this machine.

    python bench/first_run.py [--out docs/bench-first-run.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.benchlib import REPO, free_port


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--limit", type=float, default=900.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "autoannotator"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "DATA_DIR", "MODEL_DIR",
                                                                          "DATABASE_URL", "REDIS_URL"))}
        env.update(PIP_NO_CACHE_DIR="1", PORT=str(port), HOME=tmp)
        log = (Path(tmp) / "run.log").open("w")  # closed with the folder; read back if `make run` fails
        t0 = time.monotonic()
        proc = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=clone, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        marks: dict[str, float] = {}
        try:
            while time.monotonic() - t0 < a.limit:
                if proc.poll() is not None:
                    tail = (Path(tmp) / "run.log").read_text()[-3000:]
                    raise SystemExit(f"make run exited {proc.returncode}:\n{tail}")
                if "installed" not in marks and (clone / ".venv" / ".runtime").exists():
                    marks["installed"] = time.monotonic() - t0
                try:
                    health = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                except (requests.RequestException, ValueError):
                    time.sleep(0.5)
                    continue
                marks["serving"] = time.monotonic() - t0
                break
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        if "serving" not in marks:
            raise SystemExit(f"not serving after {a.limit} s")
        result = {"install_seconds": round(marks["installed"], 1), "first_answer_seconds": round(marks["serving"], 1),
                  "health": {k: health.get(k) for k in ("status", "model_version", "bundles") if k in health},
                  "venv_mb": round(sum(f.stat().st_size for f in (clone / ".venv").rglob("*") if f.is_file()) / 2**20)}
    print(json.dumps(result))
    if a.out:
        a.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
