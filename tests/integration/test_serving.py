"""Serving processes pick up promoted versions without a restart and share models across threads."""

from __future__ import annotations

import gc
import subprocess
import weakref
from concurrent.futures import ThreadPoolExecutor

from backend.datasets import load_labelled
from backend.http.app import create_app
from backend.serving.bundles import BundleStore
from backend.serving.registry import ModelRegistry
from finetune.training import train_bundle
from model import AutoAnnotatorModel
from tests.conftest import SENTIMENT, SENTIMENT_XML

TEXTS = ["I love this so much", "worst day of my life", "the bus leaves at noon", "not bad at all", "meh"]


def _body(texts):
    return {"tasks": [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)], "label_config": SENTIMENT_XML,
            "project": "5.1795746419"}


def test_new_version_is_served_without_restart(tmp_path, session_settings):
    settings = session_settings.with_(model_dir=tmp_path / "models", bundle_refresh_seconds=0.0)
    client = create_app(settings, AutoAnnotatorModel(settings)).test_client()
    assert client.post("/setup", json={"project": "5.1", "schema": SENTIMENT_XML}).json["model_version"] == \
        "autoannotator-untrained"
    data = load_labelled(SENTIMENT)
    store = BundleStore(settings.model_dir)
    ref1, _ = train_bundle(store, ["Positive", "Negative", "Neutral"], False, data,
                           [{"name": "t", "family": "tfidf", "params": {}}])
    v1 = client.post("/setup", json={"project": "5.1", "schema": SENTIMENT_XML}).json["model_version"]
    assert v1 == ref1.version
    assert client.post("/predict", json=_body(TEXTS)).json["results"][0]["model_version"] == v1
    ref2, _ = train_bundle(store, ["Positive", "Negative", "Neutral"], False, data,
                           [{"name": "t", "family": "tfidf", "params": {"classifier": "nb"}}])
    v2 = client.post("/setup", json={"project": "5.1", "schema": SENTIMENT_XML}).json["model_version"]
    assert v2 == ref2.version != v1
    assert client.post("/predict", json=_body(TEXTS)).json["results"][0]["model_version"] == v2


def test_a_loaded_bundle_is_kept_out_of_the_collectors_way_and_a_replaced_one_is_still_freed(tmp_path,
                                                                                             session_settings):
    settings = session_settings.with_(model_dir=tmp_path / "models")
    store, data = BundleStore(settings.model_dir), load_labelled(SENTIMENT)
    registry = ModelRegistry(settings)
    ref1, _ = train_bundle(store, ["Positive", "Negative", "Neutral"], False, data,
                           [{"name": "t", "family": "tfidf", "params": {}}])
    first = registry.ensemble(ref1)
    assert gc.get_freeze_count() > 0
    first.itself = first  # a cycle: only the collector frees it
    gone = weakref.ref(first)
    del first
    ref2, _ = train_bundle(store, ["Positive", "Negative", "Neutral"], False, data,
                           [{"name": "t", "family": "tfidf", "params": {"classifier": "nb"}}])
    assert registry.ensemble(ref2).version == ref2.version != ref1.version
    assert gone() is None
    assert registry.loaded() == [f"{ref2.key}/{ref2.version}"]


def test_concurrent_requests_share_one_model_and_agree(app_model, session_settings, default_bundle):
    client_app = create_app(session_settings, app_model)
    expected = client_app.test_client().post("/predict", json=_body(TEXTS)).json["results"]
    loads_before = app_model.registry.loads

    def call(_):
        return client_app.test_client().post("/predict", json=_body(TEXTS)).json["results"]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, range(32)))
    strip = [[(r["result"][0]["value"], r["score"]) for r in res] for res in [expected, *answers]]
    assert all(a == strip[0] for a in strip)
    assert app_model.registry.loads == loads_before  # nothing reloaded per request


def test_the_server_keeps_an_idle_connection_open_for_the_client_to_reuse(session_settings, tmp_path):
    """A client that pauses between requests reuses its kept-alive connection: were the server to close it first,
    a request sent at that moment would meet a reset and be lost (seen under load with gunicorn's 2 s)."""
    import os
    import socket
    import time

    from tests.integration.test_rq_learning import free_port
    from tests.integration.test_spend import CLI, _stop

    port = free_port()
    env = {**os.environ, **session_settings.with_(data_dir=tmp_path, model_dir=tmp_path / "models").to_env(),
           "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([CLI, "serve", "--no-bootstrap", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        request = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\n\r\n".encode()
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        with conn:
            for pause in (0, 5):
                time.sleep(pause)
                conn.sendall(request)
                head = conn.recv(65536)
                assert head.startswith(b"HTTP/1.1 200"), head[:200]
                length = int(head.split(b"\r\n\r\n")[0].lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += conn.recv(65536)
    finally:
        _stop(server)
