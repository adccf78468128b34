"""Two Label Studio instances both have a project 1: their corrections, jobs and reports never mix. A project is
known by its id and creation time ("1.1795746419" in /setup and /predict, `created_at` in webhooks)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backend.payload import project_ref
from backend.store import Store
from tests.conftest import SENTIMENT_XML

A, B = 1795746419, 1801234567  # two instances' project 1, created at different times


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.123456Z")


def _annotation(created: int, task_id: int, text: str, label: str) -> dict:
    project = {"id": 1, "created_at": _iso(created), "label_config": SENTIMENT_XML}
    return {"action": "ANNOTATION_CREATED",
            "annotation": {"id": task_id, "task": task_id, "completed_by": 1, "result": [
                {"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]},
            "task": {"id": task_id, "data": {"text": text}, "project": 1}, "project": project}


def test_project_references_as_label_studio_sends_them():
    assert project_ref("1.1795746419") == ("1", A)
    assert project_ref({"id": 1, "created_at": "2026-11-27T02:26:59.282630Z"}) == ("1", A)  # the capture's pair
    assert project_ref(1) == ("1", None) and project_ref("1") == ("1", None)
    assert project_ref({"id": 1, "created_at": "yesterday"}) == ("1", None)
    assert project_ref({"id": 1, "created_at": datetime.fromtimestamp(A, UTC)}) == ("1", A)  # the SDK's object
    assert project_ref("1-1801234567") == ("1-1801234567", None)  # a key given back: itself


@pytest.fixture()
def two_instances(database_url, session_settings, default_bundle):
    from backend.http.app import create_app
    from model import AutoAnnotatorModel

    model = AutoAnnotatorModel(session_settings.with_(database_url=database_url), background=False)
    yield create_app(model.settings, model).test_client(), model
    model.store.engine.dispose()


def test_two_instances_project_1_keep_their_own_data(two_instances, database_url):
    client, model = two_instances
    for created in (A, B):
        assert client.post("/setup", json={"project": f"1.{created}", "schema": SENTIMENT_XML}).status_code == 200
    assert client.post("/webhook", json=_annotation(A, 11, "the first instance's text", "Positive")).status_code == 200
    assert client.post("/webhook", json=_annotation(B, 11, "the second instance's text", "Negative")).status_code == 200
    rows = model.intake.corrections.rows
    assert [(r["task_id"], r["text"]) for r in rows("1")] == [(11, "the first instance's text")]
    assert [(r["task_id"], r["text"]) for r in rows(f"1-{B}")] == [(11, "the second instance's text")]

    # Start Training of the second reaches its own jobs only.
    start = {"action": "START_TRAINING", "project": {"id": 1, "created_at": _iso(B)}}
    assert client.post("/webhook", json=start).json["training_job"]
    assert client.get(f"/jobs?project=1.{B}").json["jobs"][0]["project_id"] == f"1-{B}"
    assert client.get("/jobs?project=1").json["jobs"] == []  # the first instance's project 1 asked for nothing

    # /predict records provenance under each project's own key; reports read it by "<id>.<created_at>".
    for created, tid in ((A, 21), (B, 22)):
        r = client.post("/predict", json={"tasks": [{"id": tid, "data": {"text": "good"}}],
                                          "label_config": SENTIMENT_XML, "project": f"1.{created}"})
        assert r.status_code == 200 and r.json["results"][0]["result"]
    assert client.get(f"/tasks/22/provenance?project=1.{B}").status_code == 200
    assert client.get(f"/tasks/22/provenance?project=1.{A}").status_code == 404
    assert client.get(f"/trust?project=1.{B}").json["project"] == f"1-{B}"

    # Another process (or a restart) resolves the same keys.
    again = Store(database_url)
    assert again.project_for("1", A) == "1" and again.project_for("1", B) == f"1-{B}"
    again.engine.dispose()


def test_a_database_from_before_keeps_its_project_under_the_bare_id(database_url):
    store = Store(database_url)
    store.note_project("7", "hash", "v1", [], [], SENTIMENT_XML)  # data written before instances were told apart
    assert store.project_for("7", A) == "7"  # the first creation time seen claims it
    assert store.project_for("7", B) == f"7-{B}"
    store.engine.dispose()
