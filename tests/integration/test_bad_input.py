"""Caller mistakes get a 4xx JSON error with a message, never a 500, and nothing is lost."""

from __future__ import annotations

import pytest

from tests.conftest import SENTIMENT_XML


def _tasks(*texts):
    return [{"id": i + 1, "data": {"text": t}} for i, t in enumerate(texts)]


@pytest.mark.parametrize(
    ("path", "data", "status", "needle"),
    [
        ("/predict", "{not json", 400, "malformed JSON"),
        ("/predict", "", 400, "empty"),
        ("/predict", "[1, 2]", 400, "object"),
        ("/setup", "\xff\xfe", 400, "malformed"),
        ("/setup", "{}", 400, "label config is missing"),
        ("/predict", '{"label_config": "<View/>"}', 400, "'tasks' is missing"),
        ("/predict", '{"tasks": {"id": 1}, "label_config": "x"}', 400, "must be a list"),
    ],
)
def test_malformed_requests(client, path, data, status, needle):
    r = client.post(path, data=data, content_type="application/json")
    assert r.status_code == status
    assert needle in r.json["error"]


def test_unknown_config_is_named_in_a_422(client):
    config = '<View><Text name="t" value="$t"/><Labels name="ner" toName="t"><Label value="PER"/></Labels></View>'
    r = client.post("/setup", json={"project": "3.1", "schema": config})
    assert r.status_code == 422 and "Labels" in r.json["error"] and "Choices" in r.json["error"]
    r = client.post("/setup", json={"project": "3.1", "schema": "<View><Text"})
    assert r.status_code == 422 and "not valid" in r.json["error"]


def test_empty_or_missing_texts_are_rejected_with_their_task_ids(client):
    body = {"tasks": [*_tasks("fine text", "   "), {"id": 9, "data": {"other": "x"}}, {"id": 10}],
            "label_config": SENTIMENT_XML}
    r = client.post("/predict", json=body)
    assert r.status_code == 422
    assert r.json["tasks"] == [2, 9, 10] and "data.text" in r.json["error"]


def test_numbers_are_texts(client):
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": 12345}}], "label_config": SENTIMENT_XML})
    assert r.status_code == 200 and r.json["results"][0]["result"]


def test_huge_texts_and_requests(client, session_settings):
    big = "a" * (session_settings.max_text_chars + 1)
    r = client.post("/predict", json={"tasks": _tasks("ok", big), "label_config": SENTIMENT_XML})
    assert r.status_code == 413 and r.json["tasks"] == [2] and "MAX_TEXT_CHARS" in r.json["error"]
    many = {"tasks": _tasks(*["x"] * (session_settings.max_tasks_per_request + 1)), "label_config": SENTIMENT_XML}
    r = client.post("/predict", json=many)
    assert r.status_code == 413 and "MAX_TASKS_PER_REQUEST" in r.json["error"]


def test_body_over_the_request_limit(session_settings, app_model):
    from backend.http.app import create_app

    c = create_app(session_settings.with_(max_request_bytes=1000), app_model).test_client()
    r = c.post("/predict", json={"tasks": _tasks("x" * 5000), "label_config": SENTIMENT_XML})
    assert r.status_code == 413 and r.json["error"]


def test_webhook_garbage_is_kept_and_answered_400(client, app_model):
    r = client.post("/webhook", data="{oops", content_type="application/json")
    assert r.status_code == 400
    (row,) = [e for e in app_model.store.events(action="INVALID_PAYLOAD") if e["id"] == r.json["event_id"]]
    assert row["payload"] == "{oops"
    r = client.post("/webhook", json={"project": {"id": 1}})
    assert r.status_code == 400 and "action" in r.json["error"]
    assert any(e["id"] == r.json["event_id"] for e in app_model.store.events(action="NO_ACTION"))


def test_unknown_actions_are_recorded_too(client, app_model):
    r = client.post("/webhook", json={"action": "LABEL_LINK_CREATED", "project": {"id": 5}})
    assert r.status_code == 200
    assert app_model.store.events(action="LABEL_LINK_CREATED", project_id="5")


def test_unknown_routes_and_methods_answer_json(client):
    assert client.get("/nope").status_code == 404 and client.get("/nope").json["error"]
    r = client.get("/predict")
    assert r.status_code == 405 and r.json["error"]
