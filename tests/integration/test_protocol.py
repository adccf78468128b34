"""The Label Studio protocol, driven by request bodies Label Studio 1.23.2 really sent."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

from tests.conftest import CAPTURED, ROOT, SENTIMENT_XML, captured

PREDICT = "POST /predict (retrieve_tasks_predictions, batch of 2)"


def test_health_is_json_and_open(client):
    r = client.get("/health")
    assert r.status_code == 200 and r.json["status"] == "UP"
    assert r.json["model_class"] == "AutoAnnotatorModel"


def test_setup_returns_the_version_predictions_carry(client, default_bundle):
    setup = client.post("/setup", json=captured("POST /setup (no auth)"))
    assert setup.status_code == 200
    assert setup.json["model_version"] == default_bundle.version
    assert setup.json["untrained_controls"] == ["topics"]  # the captured config also has a topics control
    pred = client.post("/predict", json=captured(PREDICT))
    assert pred.status_code == 200
    results = pred.json["results"]
    assert len(results) == 2  # one item per task, in order
    for item in results:
        assert item["model_version"] == setup.json["model_version"]
        assert 0 < item["score"] <= 1
        (region,) = item["result"]
        assert region["from_name"] == "sentiment" and region["to_name"] == "text" and region["type"] == "choices"
        assert region["value"]["choices"][0] in {"Positive", "Negative", "Neutral"}
        assert region["score"] == item["score"]


def test_predictions_validate_with_the_sdk(client):
    from label_studio_sdk.label_interface import LabelInterface

    li = LabelInterface(SENTIMENT_XML)
    body = {"tasks": [{"id": i, "data": {"text": t}} for i, t in enumerate(["I love it", "awful", "it is a phone"])],
            "label_config": SENTIMENT_XML, "project": "7.1795746419"}
    for item in client.post("/predict", json=body).json["results"]:
        assert li.validate_prediction({"result": item["result"], "score": item["score"]})


def test_order_is_kept_and_confidence_varies(client):
    texts = ["I absolutely love this, best day ever!", "This is terrible, I hate it so much",
             "The meeting is at 3pm in room 4", "love love love it", "worst service, never again"] * 3
    body = {"tasks": [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)], "label_config": SENTIMENT_XML}
    results = client.post("/predict", json=body).json["results"]
    labels = [r["result"][0]["value"]["choices"][0] for r in results]
    assert labels[:5] == labels[5:10] == labels[10:]
    assert labels[0] == "Positive" and labels[1] == "Negative"
    assert len({r["score"] for r in results[:5]}) > 1
    # batched answers equal one-at-a-time answers
    single = [client.post("/predict", json={"tasks": [{"id": 0, "data": {"text": t}}], "label_config": SENTIMENT_XML})
              .json["results"][0]["result"][0]["value"]["choices"][0] for t in texts[:5]]
    assert single == labels[:5]


def test_interactive_predict_body_is_accepted(client):
    r = client.post("/predict", json=captured("POST /predict (interactive-annotating)"))
    assert r.status_code == 200 and len(r.json["results"]) == 1


def test_two_controls_with_bundles_give_one_prediction_with_two_regions(client, topics_bundle, default_bundle):
    body = captured(PREDICT)
    body["tasks"][0]["data"]["text"] = "great match, the team scored a late goal"
    setup = client.post("/setup", json=captured("POST /setup (no auth)")).json
    assert "untrained_controls" not in setup
    assert setup["model_version"] not in (default_bundle.version, topics_bundle.version)
    results = client.post("/predict", json=body).json["results"]
    first = results[0]
    assert first["model_version"] == setup["model_version"]
    by_control = {r["from_name"]: r for r in first["result"]}
    assert "Sports" in by_control["topics"]["value"]["choices"]
    assert first["score"] == min(r["score"] for r in first["result"]) or len(first["result"]) < 2


def test_untrained_labels_give_an_empty_result_per_task_and_show_in_health(client):
    config = SENTIMENT_XML.replace("Positive", "Joy").replace("Negative", "Anger").replace("Neutral", "Fear")
    setup = client.post("/setup", json={"project": "42.1795746419", "schema": config})
    assert setup.status_code == 200 and setup.json["model_version"] == "autoannotator-untrained"
    body = {"tasks": [{"id": 1, "data": {"text": "a"}}, {"id": 2, "data": {"text": "b"}}], "label_config": config,
            "project": "42.1795746419"}
    r = client.post("/predict", json=body)
    assert r.status_code == 200 and r.json["results"] == [[], []]
    health = client.get("/health").json
    assert {"project": "42", "controls": ["sentiment"]} in health["projects_without_bundle"]


def test_every_captured_webhook_is_accepted_and_recorded(client, app_model):
    names = [n for n in CAPTURED if n.startswith("POST /webhook")]
    assert len(names) == 6
    for name in names:
        body = captured(name)
        r = client.post("/webhook", json=body)
        assert r.status_code == 200, (name, r.json)
        assert r.json["action"] == body["action"]
        (row,) = [e for e in app_model.store.events(action=body["action"]) if e["id"] == r.json["event_id"]]
        assert json.loads(row["payload"]) == body
        assert row["project_id"] == "1"
    created = app_model.store.events(action="ANNOTATION_CREATED")[0]
    assert created["task_id"] == 1 and created["annotation_id"] == 1


def test_versions_lists_the_served_version_first(client, default_bundle):
    r = client.get("/versions")
    versions = r.json["versions"]
    assert r.status_code == 200 and default_bundle.version in versions
    assert len(versions) == len(set(versions))
    assert all(v.startswith("aa-") for v in versions)


def test_metrics_are_prometheus_text(client):
    client.post("/predict", json=captured(PREDICT))
    r = client.get("/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain")
    text = r.get_data(as_text=True)
    assert "autoannotator_tasks_predicted_total" in text and "autoannotator_http_request_seconds_bucket" in text


def test_http_face_does_not_import_torch():
    code = ("import sys, backend.http.app, backend.commands.wsgi; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    env = {"DATA_DIR": "/tmp/aa-import-check", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_guards_everything_but_health(session_settings, app_model):
    from backend.http.app import create_app

    settings = session_settings.with_(basic_auth_user="lsuser", basic_auth_pass="s3cret")
    c = create_app(settings, app_model).test_client()
    assert c.get("/health").status_code == 200
    body = captured("POST /setup (basic auth)")
    assert c.post("/setup", json=body).status_code == 401
    assert c.post("/setup", json=body, headers=_basic("lsuser", "wrong")).status_code == 401
    assert c.post("/setup", json=body, headers={"Authorization": "Basic !!notbase64"}).status_code == 401
    denied = c.post("/webhook", json=captured("POST /webhook START_TRAINING"))
    assert denied.status_code == 401 and "basic auth" in denied.json["error"]
    # the exact header Label Studio sent in the capture
    ok = c.post("/setup", json=body, headers={"Authorization": CAPTURED["POST /setup (basic auth)"]["headers"]
                                              ["Authorization"]})
    assert ok.status_code == 200 and ok.json["model_version"]
