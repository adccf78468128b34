"""Shared plumbing for the benchmarks: real servers in subprocesses, a trained data dir, real tweets,
process-tree RSS/CPU from /proc, percentiles and a machine description.

The benchmarks talk to servers over real HTTP on 127.0.0.1 so that what they measure is what Label
Studio would see (JSON, Flask, gunicorn threads), not an in-process function call.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
LABEL_CONFIG_FILE = REPO / "samples" / "sentiment.xml"
SAMPLE_DATA = REPO / "samples" / "sentiment-semeval2013-16.csv"
# The labelled evaluation sets are not in the repository (their size and terms): a benchmark that reads them takes
# their folder from $EVAL_DATA (`from benchlib import EVAL_DATA` stops with a message when it is unset). The tests
# never read them.
_EVAL_DATA = os.environ.get("EVAL_DATA")


def __getattr__(name: str) -> Path:
    if name == "EVAL_DATA":
        if not _EVAL_DATA:
            raise SystemExit("set EVAL_DATA to the folder of the labelled evaluation sets (not in the repository)")
        return Path(_EVAL_DATA)
    raise AttributeError(name)


CAPTURED = REPO / "tests" / "fixtures" / "label-studio" / "captured-requests.json"
PROJECT = "1.1700000000"
JSON_HEADERS = {"Content-Type": "application/json", "User-Agent": "heartex/1.23.2 (autoannotator bench)"}


def unpack(rev: str, into: Path) -> Path:
    """The tree of one commit (no .git), to run that commit's code beside this one."""
    archive = into / "tree.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(archive), rev], cwd=REPO, check=True)
    tree = into / "tree"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def bench_env(**extra: str) -> dict[str, str]:
    """The environment every server runs in: offline hub, no tokenizer fork warnings."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def env_pairs(pairs: Sequence[str] | None) -> dict[str, str]:
    """--server-env KEY=VALUE options as a dict (e.g. OMP_NUM_THREADS=1, MALLOC_ARENA_MAX=2)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--server-env wants KEY=VALUE, got {pair!r}")
        out[key] = value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_texts(path: Path | None = None) -> list[str]:
    """Real tweets, one per line: TweetEval's test tweets from $EVAL_DATA, else the shipped sample CSV (the default
    bundle is trained on it, so its texts are known to the feature store: said on stderr)."""
    if path is None:
        tweets = Path(_EVAL_DATA or "") / "tweeteval-sentiment" / "sentiment__test_text.txt"
        path = tweets if _EVAL_DATA and tweets.exists() else SAMPLE_DATA
        if path == SAMPLE_DATA:
            print(f"EVAL_DATA has no TweetEval test tweets: texts from {SAMPLE_DATA.name}, which the default bundle "
                  "is trained on", file=sys.stderr)
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            texts = [row["text"] for row in csv.DictReader(f)]
    else:
        texts = path.read_text(encoding="utf-8").splitlines()
    texts = [t.strip() for t in texts if t.strip()]
    if not texts:
        raise SystemExit(f"{path}: no texts")
    return texts


def predict_body(texts: Sequence[str], first_id: int, label_config: str) -> bytes:
    """A /predict body shaped like Label Studio's (tasks, label_config, project, params)."""
    tasks = [{"id": first_id + i, "data": {"text": t}} for i, t in enumerate(texts)]
    body = {"tasks": tasks, "label_config": label_config, "project": PROJECT,
            "params": {"login": None, "password": None, "context": None}}
    return json.dumps(body).encode()


def ensure_bundle(data_dir: Path, log: IO[str], tree: Path = REPO) -> None:
    """Train the default sentiment bundle into data_dir unless one is already there (≈15 s), with the code of
    `tree` (another commit's unpacked tree runs its own code with this venv)."""
    if any((data_dir / "models" / "bundles").glob("*/CURRENT")):
        return
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "backend.commands.cli", "train", "--label-config", str(LABEL_CONFIG_FILE),
                    "--data", str(SAMPLE_DATA)], cwd=tree, env=bench_env(DATA_DIR=str(data_dir), PYTHONPATH=str(tree)),
                   stdout=log, stderr=log, check=True)
    print(f"trained the default bundle into {data_dir} in {time.perf_counter() - t0:.1f}s", flush=True)


class Server:
    """A server subprocess (its own session, so it is stopped by its own id) that answers GET /health."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict[str, str], log: IO[str], tree: Path = REPO):
        self.name, self.cmd, self.port, self.env, self.log, self.tree = name, cmd, port, env, log, tree
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def ours(cls, data_dir: Path, workers: int, threads: int, log: IO[str], tree: Path = REPO) -> Server:
        """`autoannotator serve` (gunicorn) on a free port, without the bootstrap training, with `tree`'s code."""
        port = free_port()
        cmd = [sys.executable, "-m", "backend.commands.cli", "serve", "--port", str(port), "--workers", str(workers),
               "--threads", str(threads), "--no-bootstrap"]
        env = bench_env(DATA_DIR=str(data_dir), HOST="127.0.0.1", LOG_LEVEL="WARNING", PYTHONPATH=str(tree))
        return cls("autoannotator", cmd, port, env, log, tree)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> Server:
        self.proc = subprocess.Popen(self.cmd, cwd=self.tree, env=self.env, stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/health", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /health within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        self.log.flush()
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # gunicorn's master stops its own workers
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the group we created with start_new_session
            self.proc.wait(timeout=10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- /proc --------------------------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields after "(comm)": state, ppid, ...


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def process_tree(root: int) -> list[int]:
    """root and all its descendants (gunicorn master -> workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))):
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def rss_kib(pid: int) -> int | None:
    """VmRSS of one process in KiB (None once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        if fields := _stat_fields(pid):
            total += int(fields[11]) + int(fields[12])
    return total / ticks


# -- numbers and machine ----------------------------------------------------------------------------
def latency_summary(seconds: Sequence[float]) -> dict[str, float | int]:
    """count, mean and p50/p95/p99/max in milliseconds."""
    if not seconds:
        return {"count": 0}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"count": int(ms.size), "mean_ms": round(float(ms.mean()), 2), "p50_ms": round(float(p50), 2),
            "p95_ms": round(float(p95), 2), "p99_ms": round(float(p99), 2), "max_ms": round(float(ms.max()), 2)}


def machine() -> dict[str, Any]:
    """What the figures were measured on; the load average shows how noisy the machine was."""
    model = "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), model)
    except (OSError, subprocess.CalledProcessError):
        pass
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    versions = {}
    for pkg in ("torch", "transformers", "scikit-learn", "flask", "gunicorn"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "backend", "model.py", "finetune"], cwd=REPO,
                           capture_output=True, text=True).stdout.splitlines()
    return {"git_head": git.strip(), "uncommitted_backend_files": dirty, "cpu_model": model, "cpus": os.cpu_count(),
            "avx512_bf16": "avx512_bf16" in flags,
            "python": platform.python_version(), "packages": versions, "gpu": None,
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def encoder_speed(forward: Any, texts: list[str]) -> dict[str, float]:
    """An encoder pass's own speed (a `SentenceEncoder._forward`-like callable), on the process's torch thread as
    the service runs it: texts/s over 2,000 texts (best of 3), p50 of one text over 300 more."""
    import torch

    from backend.specialists import torch_runtime as rt

    def timed(batch: list[str]) -> float:
        t0 = time.perf_counter()
        rt.on_torch_thread(torch.device("cpu"), forward, batch)
        return time.perf_counter() - t0

    timed(texts[:200])
    best = min(timed(texts[:2000]) for _ in range(3))
    singles = [timed([t]) for t in texts[2000:2300]]
    return {"texts_per_s": round(2000 / best, 1), "one_text_p50_ms": round(float(np.median(singles)) * 1000, 2)}


def tweeteval_test(limit: int) -> tuple[list[str], np.ndarray]:
    """TweetEval's sentiment test tweets from $EVAL_DATA with their gold label names (lower case)."""
    folder = Path(_EVAL_DATA or "") / "tweeteval-sentiment"
    if not _EVAL_DATA or not folder.exists():
        raise SystemExit("set EVAL_DATA to the folder of the labelled evaluation sets (tweeteval-sentiment/)")
    texts = (folder / "sentiment__test_text.txt").read_text(encoding="utf-8").splitlines()[:limit]
    gold = [int(x) for x in (folder / "sentiment__test_labels.txt").read_text().split()][:len(texts)]
    mapping = dict(line.split("\t") for line in (folder / "sentiment__mapping.txt").read_text().splitlines())
    return texts, np.array([mapping[str(g)].lower() for g in gold])


def encoder_timing_texts() -> list[str]:
    """Tweets for `encoder_speed`, none of them among `tweeteval_test`'s first 6,000: TweetEval's sentiment
    validation tweets and the last 1,000 test tweets."""
    folder = Path(_EVAL_DATA or "") / "tweeteval-sentiment"
    return ((folder / "sentiment__val_text.txt").read_text(encoding="utf-8").splitlines()
            + (folder / "sentiment__test_text.txt").read_text(encoding="utf-8").splitlines()[-1000:])


def default_ensemble(folder: Path, **runtime: Any) -> tuple[Any, Any, int]:
    """The default bundle trained into `folder`/data (`ensure_bundle`) and loaded in this process without a feature
    store: (manifest, ensemble, index of its encoder member)."""
    from backend.serving.bundles import BundleStore
    from backend.serving.ensemble import load_ensemble

    with (folder / "train.log").open("w") as log:
        ensure_bundle(folder / "data", log)
    store = BundleStore(folder / "data" / "models")
    ref = store.current(store.keys()[0])
    manifest = store.manifest(ref)
    ensemble = load_ensemble(ref, manifest, feature_store_mb=0, **runtime)
    return manifest, ensemble, next(i for i, s in enumerate(ensemble.specialists) if s.family == "encoder")


def ensemble_labels(ensemble: Any, manifest: Any, member: int, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(the ensemble's label names in lower case, the argmax column of specialist `member`) for each text."""
    probas = ensemble.probabilities(texts)
    labels = np.array([manifest.labels[d.labels[0]].lower() for d in ensemble.decisions(texts, probas)])
    return labels, probas[member].argmax(1)


def held_out_parser(doc: str | None) -> argparse.ArgumentParser:
    """The options of a benchmark that labels held-out TweetEval tweets (`tweeteval_test`): --out, --texts."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="write the results here as JSON")
    p.add_argument("--texts", type=int, default=6000, help="held-out TweetEval test tweets to label")
    return p


def write_report(path: Path | None, report: dict[str, Any]) -> int:
    """`report` as JSON into `path` when one is given; returns 0, the benchmark's exit status."""
    if path:
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {path}")
    return 0
