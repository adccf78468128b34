"""`autoannotator stack`: the queue topology of docker-compose.yml (`--profile queue`) without Docker.

A Redis (REDIS_URL, or a private redis-server started here), the backend (`autoannotator serve`) and N rq workers
(`autoannotator worker`), sharing this environment's DATA_DIR and DATABASE_URL. A worker that dies is started
again; SIGINT or SIGTERM stops everything. For a machine without Docker, and for the tests of that topology.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from backend.settings import Settings

log = logging.getLogger(__name__)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir),
                             "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("redis-server did not start (is it installed? apt-get install redis-server)")


def run_stack(settings: Settings, rq_workers: int = 2, serve_workers: int = 1) -> int:
    """Start the topology and supervise it until a signal; returns the exit status."""
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    redis = None
    redis_url = settings.redis_url
    if not redis_url:
        redis, redis_url = _redis(Path(settings.data_dir).absolute())
    env = {**os.environ, **settings.to_env(), "REDIS_URL": redis_url}
    cli = [sys.executable, "-m", "backend.commands.cli"]
    server = subprocess.Popen([*cli, "serve", "--workers", str(serve_workers)], env=env)
    workers = [subprocess.Popen([*cli, "worker"], env=env) for _ in range(rq_workers)]
    print(f"stack: backend http://{settings.host}:{settings.port} (pid {server.pid}), {rq_workers} rq workers "
          f"({', '.join(str(w.pid) for w in workers)}), Redis {redis_url}", flush=True)
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    try:
        while not stopping:
            if server.poll() is not None:
                log.error("the backend exited with %s: stopping the stack", server.returncode)
                status = server.returncode or 1
                break
            for i, w in enumerate(workers):
                if w.poll() is not None:
                    log.warning("rq worker %s exited with %s: starting another", w.pid, w.returncode)
                    workers[i] = subprocess.Popen([*cli, "worker"], env=env)
            time.sleep(0.5)
    finally:
        for proc in [*workers, server]:
            if proc.poll() is None:
                proc.terminate()
        for proc in [*workers, server]:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if redis is not None:
            redis.terminate()
            redis.wait(10)
    return status
