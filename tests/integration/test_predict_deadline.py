"""A /predict bigger than PREDICT_SECONDS allows answers in time, and what it could not predict is not lost: queued
to be pushed into Label Studio (tested end to end in tests/e2e/test_retrieve_big.py) or, with no Label Studio to push
to, computed into the feature store so that the next request is answered from it."""

from __future__ import annotations

import csv
import time
import uuid

from backend.http.app import create_app
from backend.push import PushChore, PushKind
from model import AutoAnnotatorModel
from tests.conftest import SENTIMENT, SENTIMENT_XML

PROJECT = "7.1795746419"


def _tasks(n: int, first_id: int = 1) -> list[dict]:
    """`n` texts nobody has seen (a fresh tag each), each about 600 characters: the encoder's slow case."""
    tag = uuid.uuid4().hex[:8]
    with SENTIMENT.open(newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    out = []
    for i in range(n):
        text = " ".join(texts[(i + k) % len(texts)] for k in range(6))[:600]
        out.append({"id": first_id + i, "data": {"text": f"{tag}-{i} {text}"}})
    return out


def test_a_big_predict_answers_in_time_and_the_rest_is_answered_from_the_store_next(tmp_path, session_settings,
                                                                                   default_bundle):
    settings = session_settings.with_(predict_seconds=1.0, database_url=f"sqlite:///{tmp_path}/aa.db")
    service = AutoAnnotatorModel(settings, background=False)
    client = create_app(settings, service).test_client()
    tasks = _tasks(1500)
    body = {"tasks": tasks, "label_config": SENTIMENT_XML, "project": PROJECT}
    client.post("/predict", json={**body, "tasks": _tasks(8, first_id=100_000)})  # the bundle loaded
    started = time.monotonic()
    assert client.post("/predict", json={**body, "tasks": _tasks(256, first_id=200_000)}).status_code == 200
    chunk = time.monotonic() - started  # what one chunk of such tasks takes on this machine, with nothing cut
    started = time.monotonic()
    first = client.post("/predict", json=body)
    took = time.monotonic() - started
    assert first.status_code == 200, first.text
    results = first.json["results"]
    answered = [i for i, r in enumerate(results) if r]
    assert 0 < len(answered) < len(tasks), len(answered)
    assert answered == list(range(len(answered)))  # in order: a prefix, the rest answered empty
    # PREDICT_SECONDS, then at most the chunk under way when it ran out, and the JSON; all 1,500 take 6 chunks.
    assert took < 1.0 + 2 * chunk + 1.0, (took, chunk)
    assert all(r["result"][0]["value"]["choices"] for r in results[:len(answered)])
    late = len(tasks) - len(answered)

    (run,) = client.get("/jobs?project=" + PROJECT).json["pushes"]  # no Label Studio to push to: computed only
    assert (run["kind"], run["tasks"], run["done"], run["state"]) == (PushKind.WARM, late, 0, "running")
    chore = PushChore(settings, service.store, service.for_pushes)  # the server loop's turn, run to its end
    while chore():
        pass
    (run,) = client.get("/jobs?project=" + PROJECT).json["pushes"]
    assert (run["done"], run["warmed"], run["pushed"], run["state"]) == (late, late, 0, "done")

    again = client.post("/predict", json=body).json["results"]
    assert all(again), "every text's features are in the store now: nothing is left for later"
    assert [r["result"][0]["value"] for r in again[:len(answered)]] == \
        [r["result"][0]["value"] for r in results[:len(answered)]]
    assert len(client.get("/jobs?project=" + PROJECT).json["pushes"]) == 1  # nothing new deferred


def test_tasks_whose_predictions_are_on_their_way_are_not_predicted_twice(tmp_path, session_settings, default_bundle):
    settings = session_settings.with_(predict_seconds=0.3, database_url=f"sqlite:///{tmp_path}/aa.db",
                                      label_studio_url="http://127.0.0.1:9", label_studio_api_key="k")
    service = AutoAnnotatorModel(settings, background=False)
    tasks = _tasks(800, first_id=10_000)
    results = service.predict(tasks, SENTIMENT_XML, PROJECT)
    late = {t["id"] for t, r in zip(tasks, results, strict=True) if not r}
    assert late
    (run,) = service.pushes.progress("7")
    assert (run["kind"], run["tasks"]) == (PushKind.RETRIEVE, len(late))  # to be pushed into Label Studio 7
    # Label Studio asks again (a second "Retrieve predictions"): the queued tasks are answered empty, not twice
    again = service.settings
    service.settings = again.with_(predict_seconds=60.0)
    second = service.predict(tasks, SENTIMENT_XML, PROJECT)
    assert {t["id"] for t, r in zip(tasks, second, strict=True) if not r} == late
    (run,) = service.pushes.progress("7")
    assert run["tasks"] == len(late)
