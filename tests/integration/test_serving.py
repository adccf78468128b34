"""Serving processes pick up promoted versions without a restart and share models across threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from backend.datasets import load_labelled
from backend.http.app import create_app
from backend.serving.bundles import BundleStore
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
