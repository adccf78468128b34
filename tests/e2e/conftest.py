"""Session fixtures for the end-to-end suite: a real Label Studio 1.23.2 talking to a real AutoAnnotator.

Both run as subprocesses on free loopback ports with throw-away data directories. Label Studio is
spawned first because its first start (fresh SQLite, migrations) is the slowest step (~35 s); the
bundle is trained and gunicorn started while it boots. Both process groups are terminated at the end,
and the tail of each log is attached to any failing test's report, since the cause of an e2e failure
is almost always in one of those logs rather than in the assertion.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "samples"
LABEL_CONFIG = SAMPLES / "sentiment.xml"
SAMPLE_CSV = REPO / "tests" / "fixtures" / "data" / "sentiment-semeval2013-balanced.csv"
AUTOANNOTATOR = Path(sys.executable).parent / "autoannotator"

LS_USER = "e2e@example.com"
LS_PASSWORD = "E2e-Passw0rd!"
LS_TOKEN = "e2e0123456789abcdef0123456789abcdef0123"
LS_START_TIMEOUT_S = 120.0
BACKEND_START_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 60

# Log files of the processes started in this session, attached to failing reports.
_LOGS: dict[str, Path] = {}


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


def _all_log_tails() -> str:
    return "\n\n".join(f"--- last {LOG_TAIL_LINES} lines of {name} log ({p}) ---\n{log_tail(p)}"
                       for name, p in _LOGS.items())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach both server logs to failed setups and tests: the assertion alone rarely says why."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and _LOGS:
        report.sections.append(("server logs", _all_log_tails()))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A subprocess in its own process group, so that stopping it also stops gunicorn workers."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, grace_s: float = 15.0) -> None:
        if self.proc.poll() is not None:
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll `ready` until it holds; fail fast, with the log, if the process dies meanwhile."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode} before {what}\n{log_tail(self.log)}")
            try:
                if ready():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        pytest.fail(f"{self.name} not ready ({what}) after {timeout_s:.0f} s\n{log_tail(self.log)}")


def spawn(name: str, cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> Server:
    _LOGS[name] = log
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return Server(name, proc, log)


@dataclass
class Backend:
    url: str
    data_dir: Path
    database_url: str
    trained_version: str


@dataclass
class LabelStudio:
    """A requests session bound to Label Studio's base URL with the legacy token header."""

    url: str
    session: requests.Session = field(default_factory=requests.Session)

    def request(self, method: str, path: str, expect: int | tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        """Call the API and check the status; the error shows Label Studio's body, which names the cause."""
        kwargs.setdefault("timeout", 120)
        resp = self.session.request(method, self.url + path, **kwargs)
        codes = (expect,) if isinstance(expect, int) else expect
        assert resp.status_code in codes, f"{method} {path} -> {resp.status_code}: {resp.text[:2000]}"
        return resp.json() if resp.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("PATCH", path, json=body, **kwargs)


@pytest.fixture(scope="session")
def label_studio_bin() -> Path:
    """Fail (never skip) when Label Studio is missing: a silently skipped e2e suite proves nothing."""
    raw = os.environ.get("LABEL_STUDIO_BIN", "")
    if not raw:
        pytest.fail("LABEL_STUDIO_BIN is not set: run `make e2e`, or set it to the label-studio executable "
                    "of a Label Studio 1.23.2 install (e.g. .venv-ls/bin/label-studio after `make ls-install`)")
    path = Path(raw)
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"LABEL_STUDIO_BIN={raw} is not an executable file: run `make ls-install`")
    return path


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


def _base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


@contextmanager
def extra_backend(e2e_dir: Path, name: str, model_dir: Path, **env_vars: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Another backend serving the session's trained bundles from a DATA_DIR of its own, with `env_vars` on top of
    a clean environment; yields its URL and environment, and stops it afterwards."""
    data_dir = e2e_dir / name
    data_dir.mkdir()
    port = free_port()
    env = _base_env()
    for var in ("DATABASE_URL", "BASIC_AUTH_USER", "BASIC_AUTH_PASS", "REDIS_URL", "LLM_MODEL", "OPENAI_BASE_URL"):
        env.pop(var, None)
    env.update(DATA_DIR=str(data_dir), MODEL_DIR=str(model_dir), HOST="127.0.0.1", PORT=str(port), **env_vars)
    url = f"http://127.0.0.1:{port}"
    server = spawn(name, [str(AUTOANNOTATOR), "serve", "--port", str(port), "--no-bootstrap"], env, e2e_dir,
                   e2e_dir / f"{name}.log")
    try:
        server.wait_until(lambda: requests.get(url + "/health", timeout=2).ok, BACKEND_START_TIMEOUT_S, "/health")
        yield url, env
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _label_studio_process(label_studio_bin: Path, e2e_dir: Path) -> Iterator[tuple[Server, str]]:
    """Spawn Label Studio without waiting for it, so the backend can be trained while it migrates."""
    data = e2e_dir / "label-studio"
    data.mkdir()
    port = free_port()
    env = _base_env()
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data),
        # Legacy "Token <key>" auth only exists for orgs created with this flag (first start).
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        # Both are needed for a loopback backend: without the second, the backend connects but has no webhook.
        ML_BLOCK_LOCAL_IP="false",
        SSRF_PROTECTION_ENABLED="false",
        COLLECT_ANALYTICS="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        LATEST_VERSION_CHECK="false",  # no internet: the PyPI check would stall the start
    )
    cmd = [str(label_studio_bin), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
           "--internal-host", "127.0.0.1", "--username", LS_USER, "--password", LS_PASSWORD,
           "--user-token", LS_TOKEN]
    server = spawn("label-studio", cmd, env, data, e2e_dir / "label-studio.log")
    yield server, f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def backend(e2e_dir: Path) -> Iterator[Backend]:
    """Train the sample bundle into a fresh DATA_DIR, then serve it with gunicorn (the production path)."""
    data_dir = e2e_dir / "backend"
    data_dir.mkdir()
    port = free_port()
    env = _base_env()
    for var in ("DATABASE_URL", "MODEL_DIR", "BASIC_AUTH_USER", "BASIC_AUTH_PASS"):
        env.pop(var, None)
    env.update(DATA_DIR=str(data_dir), HOST="127.0.0.1", PORT=str(port))
    train = subprocess.run([str(AUTOANNOTATOR), "train", "--label-config", str(LABEL_CONFIG), "--data",
                            str(SAMPLE_CSV)], env=env, cwd=e2e_dir, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, f"autoannotator train failed:\n{train.stdout[-3000:]}\n{train.stderr[-3000:]}"
    trained = json.loads(train.stdout[train.stdout.index("{"):])
    url = f"http://127.0.0.1:{port}"
    server = spawn("backend", [str(AUTOANNOTATOR), "serve", "--port", str(port), "--no-bootstrap"], env, e2e_dir,
                   e2e_dir / "backend.log")
    try:
        server.wait_until(lambda: requests.get(url + "/health", timeout=2).ok, BACKEND_START_TIMEOUT_S, "/health")
        yield Backend(url=url, data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'autoannotator.db'}",
                      trained_version=trained["model_version"])
    finally:
        server.stop()


@pytest.fixture(scope="session")
def label_studio(_label_studio_process: tuple[Server, str], backend: Backend) -> LabelStudio:
    """Label Studio, up and accepting the user token (the backend fixture runs while it boots)."""
    server, url = _label_studio_process
    ls = LabelStudio(url)
    ls.session.headers["Authorization"] = f"Token {LS_TOKEN}"

    def ready() -> bool:
        return requests.get(url + "/health", timeout=2).ok and ls.session.get(url + "/api/projects/", timeout=5).ok

    server.wait_until(ready, LS_START_TIMEOUT_S, "/health and a token-authenticated /api/projects/")
    return ls
