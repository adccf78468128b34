"""Inputs an operator met as 500s: each now gets a 4xx JSON answer with a message, webhook bodies are stored first
whatever they hold, and an event whose processing failed on our side is retried until it is applied.

Run on SQLite and PostgreSQL (NUL bytes, 64-bit ids and long names fail differently there)."""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy import select, text, update

from backend.store import EventState, Store, webhook_events
from tests.conftest import SENTIMENT_XML


@pytest.fixture()
def db_model(database_url, session_settings, default_bundle):
    """The real model on a fresh database of each kind, serving the session's default bundle."""
    from model import AutoAnnotatorModel

    settings = session_settings.with_(database_url=database_url)
    model = AutoAnnotatorModel(settings, background=False)
    yield model
    model.store.engine.dispose()


@pytest.fixture()
def db_client(db_model, session_settings):
    from backend.http.app import create_app

    return create_app(db_model.settings, db_model).test_client()


def _annotation(task_id=1, ann_id=5, result=None, text="a fine phone", choices=("Positive",), control="sentiment"):
    result = result if result is not None else [
        {"from_name": control, "to_name": "text", "type": "choices", "value": {"choices": list(choices)}}]
    return {"action": "ANNOTATION_CREATED",
            "annotation": {"id": ann_id, "result": result, "task": task_id, "project": 4, "completed_by": 1},
            "task": {"id": task_id, "data": {"text": text}, "project": 4},
            "project": {"id": 4, "label_config": SENTIMENT_XML}}


def _events(model) -> list[dict]:
    with model.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(webhook_events).order_by(webhook_events.c.id))]


NESTED = "[" * 50_000 + "]" * 50_000
HOSTILE_WEBHOOKS = {
    "nested deeper than the parser": ('{"action": "ANNOTATION_CREATED", "x": ' + NESTED + "}", "nested deeper"),
    "nested past the limit": (json.dumps({"action": "X", "x": json.loads("[" * 80 + "]" * 80)}), "nested deeper"),
    "task id of 2^40": (json.dumps(_annotation(task_id=2**40)), "task.id"),
    "task id of 2^70": (json.dumps(_annotation(task_id=2**70, ann_id=2**70)), "task.id"),
    "task id true": (json.dumps(_annotation(task_id=True)), "task.id"),
    "annotation id NaN": (json.dumps(_annotation()).replace('"id": 5', '"id": NaN'), "NaN"),
    "project id of 500 characters": (json.dumps({**_annotation(), "project": {"id": "p" * 500}}), "'project'"),
    "value a string": (json.dumps(_annotation(result=[{"from_name": "sentiment", "type": "choices", "value": "x"}])),
                       "value must be an object"),
    "from_name an object": (json.dumps(_annotation(result=[{"from_name": {}, "type": "choices",
                                                             "value": {"choices": ["Positive"]}}])), "from_name"),
    "choices objects": (json.dumps(_annotation(choices=({"a": 1},))), "choices"),
    "control of 500 characters": (json.dumps(_annotation(control="c" * 500)), "from_name"),
    "result not a list": (json.dumps(_annotation(result="x")), "result must be a list"),
    "not UTF-8": (b"\xff\xfe{", "not UTF-8"),
}


@pytest.mark.parametrize("name", list(HOSTILE_WEBHOOKS))
def test_hostile_webhooks_are_stored_rejected_and_answered_400(db_client, db_model, name):
    body, needle = HOSTILE_WEBHOOKS[name]
    raw = body if isinstance(body, bytes) else body.encode()
    r = db_client.post("/webhook", data=raw, content_type="application/json")
    assert r.status_code == 400, r.json
    assert needle in r.json["error"] and r.json["event_id"]
    (event,) = _events(db_model)
    assert event["id"] == r.json["event_id"] and event["status"] == EventState.REJECTED
    assert event["error"] and needle in event["error"]
    assert event["payload"].startswith(raw.decode("utf-8", "replace")[:200].replace("\x00", "\ufffd"))
    assert db_model.intake.corrections.human_count("4") == 0  # nothing of it became a label
    assert db_client.get("/health").json["webhooks"]["events"] == {"rejected": 1}


@pytest.mark.parametrize(("path", "body", "needle"), [
    ("/predict", '{"tasks": ' + NESTED + "}", "nested deeper"),
    ("/setup", '{"project": ' + NESTED + "}", "nested deeper"),
    ("/predict", json.dumps({"tasks": [{"id": 2**40, "data": {"text": "x"}}], "label_config": SENTIMENT_XML}),
     "task ids"),
    ("/predict", json.dumps({"tasks": [{"id": True, "data": {"text": "x"}}], "label_config": SENTIMENT_XML}),
     "task ids"),
    ("/predict", '{"tasks": [{"id": NaN, "data": {"text": "x"}}], "label_config": "<View/>"}', "NaN"),
    ("/predict", json.dumps({"tasks": [], "label_config": SENTIMENT_XML, "project": "p" * 500}), "'project'"),
    ("/setup", json.dumps({"project": "p" * 500, "schema": SENTIMENT_XML}), "'project'"),
    ("/setup", json.dumps({"project": {"id": [1]}, "schema": SENTIMENT_XML}), "'project'"),
])
def test_hostile_requests_get_a_4xx_with_a_message(db_client, path, body, needle):
    r = db_client.post(path, data=body, content_type="application/json")
    assert 400 <= r.status_code < 500 and needle in r.json["error"], r.json


@pytest.mark.parametrize("path", ["/jobs/" + "9" * 30, f"/jobs/{2**63}", "/tasks/" + "9" * 30 + "/provenance",
                                  f"/tasks/{2**40}/provenance", "/jobs?project=" + "p" * 500,
                                  "/trust?project=%00", "/ui/projects/1?task=999999999999999999"])
def test_odd_ids_in_paths_and_queries_get_a_4xx(db_client, db_model, path):
    db_model.setup("1.1700000000", SENTIMENT_XML)  # the page of project 1 exists
    r = db_client.get(path)
    assert r.status_code in (400, 404) and r.json["error"], r.get_data(as_text=True)[:300]


def test_odd_unicode_is_stored_and_predicted_on_both_databases(db_client, db_model):
    """A NUL byte (PostgreSQL refuses it in text) and a lone surrogate (not UTF-8) in real texts."""
    for n, txt in enumerate(["love it\u0000 so much", "awful \ud800 phone"], start=1):
        raw = json.dumps(_annotation(task_id=n, ann_id=n, text=txt)).encode()
        r = db_client.post("/webhook", data=raw, content_type="application/json")
        assert r.status_code == 200 and r.json["corrections"] == 1, r.json
        p = db_client.post("/predict", json={"tasks": [{"id": 10 + n, "data": {"text": txt}}],
                                             "label_config": SENTIMENT_XML, "project": "4.1700000000"})
        assert p.status_code == 200 and p.json["results"][0]["result"]
    texts = [r["text"] for r in db_model.intake.corrections.rows("4")]
    assert sorted(texts) == ["awful \ufffd phone", "love it\ufffd so much"]
    assert {e["status"] for e in _events(db_model)} == {EventState.APPLIED}


def test_an_internal_error_answers_500_without_echoing_sql_or_text(db_client, db_model, monkeypatch, caplog):
    def broken():
        raise RuntimeError("SELECT * FROM corrections WHERE text = 'the annotated secret'")

    monkeypatch.setattr(db_model, "versions", broken)
    r = db_client.get("/versions")
    assert r.status_code == 500 and r.json["error_id"]
    assert "secret" not in r.get_data(as_text=True) and "SELECT" not in r.get_data(as_text=True)
    assert r.json["error_id"] in caplog.text  # the operator finds the details in the log


def test_an_event_whose_processing_failed_is_kept_retried_and_applied(db_client, db_model):
    """A real failure on our side: the corrections table is gone while the event arrives."""
    engine = db_model.store.engine
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE corrections RENAME TO corrections_away"))
    r = db_client.post("/webhook", json=_annotation(task_id=7, ann_id=70))
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE corrections_away RENAME TO corrections"))
    assert r.status_code == 202 and r.json["applied"] is False and "retried" in r.json["retry"]
    assert "corrections_away" not in r.get_data(as_text=True) and "a fine phone" not in r.get_data(as_text=True)
    (event,) = _events(db_model)
    assert event["status"] == EventState.FAILED and event["attempts"] == 0
    health = db_client.get("/health").json["webhooks"]
    assert health["events"] == {"failed": 1} and "retries" in health["failed"]
    # The learning loop's retry, once the backoff has passed.
    with engine.begin() as conn:
        conn.execute(update(webhook_events).values(processed_at=0.0))
    assert db_model.replay_events() == 1
    (event,) = _events(db_model)
    assert event["status"] == EventState.APPLIED and event["attempts"] == 1
    assert [(r["task_id"], r["choices"]) for r in db_model.intake.corrections.rows("4")] == [(7, ["Positive"])]
    assert db_model.replay_events() == 0  # applied once, never again


def test_an_event_left_received_by_a_dead_process_is_applied_later(db_model):
    body = _annotation(task_id=8, ann_id=80)
    event_id = db_model.store.record_event("ANNOTATION_CREATED", json.dumps(body), body)  # then the process died
    assert db_model.replay_events() == 0  # too recent: its own process may still be applying it
    with db_model.store.engine.begin() as conn:
        conn.execute(update(webhook_events).values(received_at=0.0))
    assert db_model.replay_events() == 1
    assert _events(db_model)[0]["status"] == EventState.APPLIED and _events(db_model)[0]["id"] == event_id
    assert len(db_model.intake.corrections.rows("4")) == 1


def test_a_failing_event_is_given_up_after_its_attempts_and_stays_visible(db_model):
    db_model.store.record_event("ANNOTATION_CREATED", "{}", None)
    with db_model.store.engine.begin() as conn:
        conn.execute(update(webhook_events).values(status=EventState.FAILED.value, processed_at=0.0))
    assert db_model.replay_events() == 1  # "{}" has no action: rejected with a reason, not retried forever
    (event,) = _events(db_model)
    assert event["status"] == EventState.REJECTED and "action" in event["error"]


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_a_webhook_without_credentials_is_stored_counted_and_shown_never_applied(db_model):
    from backend.http.app import create_app

    settings = db_model.settings.with_(basic_auth_user="lsuser", basic_auth_pass="s3cret")
    c = create_app(settings, db_model).test_client()
    r = c.post("/webhook", json=_annotation(task_id=9, ann_id=90))  # as Label Studio sends it: no headers
    assert r.status_code == 401 and r.json["event_id"] and "LABEL_STUDIO_API_KEY" in r.json["error"]
    (event,) = _events(db_model)
    assert event["status"] == EventState.UNAUTHENTICATED and event["task_id"] == 9
    assert db_model.intake.corrections.rows("4") == []
    health = c.get("/health").json["webhooks"]
    assert health["events"] == {"unauthenticated": 1}
    assert health["last_unauthenticated"]["event_id"] == r.json["event_id"] and "LABEL_STUDIO_URL" in health["hint"]
    assert db_model.replay_events() == 0  # never applied behind the operator's back
    ok = c.post("/webhook", json=_annotation(task_id=10, ann_id=100), headers=_basic("lsuser", "s3cret"))
    assert ok.status_code == 200 and ok.json["corrections"] == 1


def test_an_older_database_gains_the_new_columns(tmp_path):
    from sqlalchemy import create_engine

    url = f"sqlite:///{tmp_path}/old.db"
    old = create_engine(url)
    with old.begin() as conn:
        conn.execute(text("CREATE TABLE webhook_events (id INTEGER PRIMARY KEY, received_at FLOAT NOT NULL, "
                          "action VARCHAR(64) NOT NULL, project_id VARCHAR(64), task_id INTEGER, "
                          "annotation_id INTEGER, payload TEXT NOT NULL, processed_at FLOAT)"))
        conn.execute(text("INSERT INTO webhook_events (received_at, action, payload) VALUES (1.0, 'X', '{}')"))
    old.dispose()
    store = Store(url)
    assert store.event_states() == {"legacy": 1}  # an event from before states existed is never replayed
    assert store.claim_event_retry() is None
    store.record_event("X", "{}", {"action": "X"})
    assert store.event_states() == {"legacy": 1, "received": 1}
