"""AutoAnnotator driven by a real Label Studio 1.23.2, the way a user drives it from the UI.

The tests run in file order against one project (module fixtures): connect the backend, "Retrieve
predictions" from the Data Manager, align project.model_version so the score column fills, open a
task imported later, annotate. Each step checks what Label Studio stored, not what the backend
answered, because the failures users report live in between (versions that do not match, duplicate
predictions, an empty score column, a webhook that never arrives).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from backend.store import Store

from .conftest import LABEL_CONFIG, SAMPLE_CSV, Backend, LabelStudio

pytestmark = pytest.mark.e2e

N_TASKS = 20
LABELS = {"Positive", "Negative", "Neutral"}
RETRIEVE = "/api/dm/actions?id=retrieve_tasks_predictions&project={pid}"
ALL_ITEMS = {"selectedItems": {"all": True, "excluded": []}}


def sample_texts(n: int, skip: int = 0) -> list[str]:
    """Distinct non-empty texts from the sample CSV (the same data the bundle was trained on)."""
    texts: list[str] = []
    with SAMPLE_CSV.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = (row.get("text") or "").strip()
            if text and text not in texts:
                texts.append(text)
            if len(texts) == n + skip:
                break
    return texts[skip:]


@dataclass
class Project:
    id: int
    task_ids: list[int]
    ml_id: int
    model_version: str


def task_list(ls: LabelStudio, pid: int, **params: Any) -> list[dict[str, Any]]:
    """Tasks as the Data Manager lists them (fields=all carries the computed columns)."""
    body = ls.get("/api/tasks/", params={"project": pid, "page_size": 1000, **params})
    return body["tasks"]


def predictions(ls: LabelStudio, pid: int) -> list[dict[str, Any]]:
    return ls.get("/api/predictions/", params={"project": pid})


def retrieve_predictions(ls: LabelStudio, pid: int) -> dict[str, Any]:
    return ls.post(RETRIEVE.format(pid=pid), ALL_ITEMS)


@pytest.fixture(scope="module")
def project(label_studio: LabelStudio, backend: Backend) -> Project:
    """A sentiment project with N_TASKS tasks, then the backend connected as a user does it (POST /api/ml/)."""
    ls = label_studio
    created = ls.post("/api/projects/", {"title": "e2e sentiment", "label_config": LABEL_CONFIG.read_text()})
    pid = created["id"]
    imported = ls.post(f"/api/projects/{pid}/import", [{"text": t} for t in sample_texts(N_TASKS)])
    assert imported["task_count"] == N_TASKS, imported
    task_ids = sorted(t["id"] for t in task_list(ls, pid))
    assert len(task_ids) == N_TASKS
    ml = ls.post("/api/ml/", {"url": backend.url, "project": pid, "title": "autoannotator"})
    setup = requests.post(backend.url + "/setup", json={"project": f"{pid}.0", "schema": LABEL_CONFIG.read_text()},
                          timeout=30)
    assert setup.ok, setup.text
    return Project(id=pid, task_ids=task_ids, ml_id=ml["id"], model_version=setup.json()["model_version"])


@pytest.fixture(scope="module")
def retrieved(label_studio: LabelStudio, project: Project) -> dict[str, Any]:
    """The first Data Manager "Retrieve predictions" over all tasks (synchronous without Redis)."""
    return retrieve_predictions(label_studio, project.id)


def test_backend_is_connected_with_its_auto_webhook(label_studio: LabelStudio, backend: Backend,
                                                    project: Project) -> None:
    """Without the webhook, annotations never reach /webhook: the 'Connected but no webhook' SSRF trap."""
    ml = label_studio.get(f"/api/ml/{project.ml_id}")
    assert ml["state"] == "CO", ml
    assert ml["url"] == backend.url
    hooks = label_studio.get("/api/webhooks/", params={"project": project.id})
    urls = [h["url"] for h in hooks if h.get("project") == project.id]
    assert urls == [backend.url + "/webhook"], hooks
    hook = next(h for h in hooks if h["url"] == backend.url + "/webhook")
    assert hook["send_payload"] and hook["send_for_all_actions"] and hook["is_active"], hook


def test_setup_version_is_the_trained_bundle(label_studio: LabelStudio, backend: Backend, project: Project) -> None:
    """/setup must name the promoted bundle: that is the version predictions carry and LS dedupes on."""
    assert project.model_version == backend.trained_version
    ml = label_studio.get(f"/api/ml/{project.ml_id}")
    assert ml["model_version"] == project.model_version, ml


def test_retrieve_predictions_stores_one_per_task(label_studio: LabelStudio, project: Project,
                                                  retrieved: dict[str, Any]) -> None:
    assert retrieved.get("processed_items") == N_TASKS, retrieved
    preds = predictions(label_studio, project.id)
    assert sorted(p["task"] for p in preds) == project.task_ids, "not exactly one prediction per task"
    for p in preds:
        assert p["model_version"] == project.model_version, p
        assert p["score"] is not None and 0 < p["score"] <= 1, p
        [region] = p["result"]
        assert region["type"] == "choices" and region["from_name"] == "sentiment" and region["to_name"] == "text"
        [choice] = region["value"]["choices"]
        assert choice in LABELS, region


def test_retrieve_predictions_again_adds_no_duplicates(label_studio: LabelStudio, project: Project,
                                                       retrieved: dict[str, Any]) -> None:
    """LS skips tasks holding a prediction of the /setup version; a version mismatch would duplicate them."""
    before = predictions(label_studio, project.id)
    retrieve_predictions(label_studio, project.id)
    after = predictions(label_studio, project.id)
    assert len(after) == len(before) == N_TASKS
    assert sorted(p["id"] for p in after) == sorted(p["id"] for p in before)


def test_patch_ml_backend_with_url_and_project(label_studio: LabelStudio, backend: Backend, project: Project) -> None:
    """LS 1.23.2 answers 500 (TypeError in healthcheck_/setup_) to a PATCH lacking url and project: send both."""
    ml = label_studio.patch(f"/api/ml/{project.ml_id}",
                            {"url": backend.url, "project": project.id, "title": "autoannotator (e2e)"})
    assert ml["title"] == "autoannotator (e2e)"
    assert ml["state"] == "CO", ml
    assert ml["model_version"] == project.model_version, ml


def test_score_column_fills_once_project_model_version_matches(label_studio: LabelStudio, project: Project,
                                                               retrieved: dict[str, Any]) -> None:
    """predictions_score averages only predictions of project.model_version, which LS sets to the backend title."""
    proj = label_studio.patch(f"/api/projects/{project.id}/", {"model_version": project.model_version})
    assert proj["model_version"] == project.model_version
    by_task = {p["task"]: p["score"] for p in predictions(label_studio, project.id)}
    tasks = task_list(label_studio, project.id, fields="all")
    assert len(tasks) == N_TASKS
    for t in tasks:
        assert t["predictions_score"] == pytest.approx(by_task[t["id"]]), t
        assert project.model_version in t["predictions_model_versions"], t


def test_score_filter_in_a_data_manager_view(label_studio: LabelStudio, project: Project,
                                             retrieved: dict[str, Any]) -> None:
    """The review queue users build: a tab filtered on predictions_score below a threshold."""
    label_studio.patch(f"/api/projects/{project.id}/", {"model_version": project.model_version})
    scores = sorted({p["score"] for p in predictions(label_studio, project.id)})
    assert len(scores) >= 2, f"all {N_TASKS} predictions share one score: {scores}"
    threshold = (scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2  # between two distinct scores
    expected = sorted(p["task"] for p in predictions(label_studio, project.id) if p["score"] < threshold)
    view = label_studio.post("/api/dm/views/", {"project": project.id, "data": {"filters": {
        "conjunction": "and",
        "items": [{"filter": "filter:tasks:predictions_score", "operator": "less", "type": "Number",
                   "value": threshold}],
    }}})
    try:
        got = sorted(t["id"] for t in task_list(label_studio, project.id, view=view["id"]))
        assert got == expected and 0 < len(got) < N_TASKS
    finally:
        label_studio.request("DELETE", f"/api/dm/views/{view['id']}/", expect=(200, 204))


def test_task_imported_later_is_predicted_when_opened(label_studio: LabelStudio, backend: Backend,
                                                      project: Project, retrieved: dict[str, Any]) -> None:
    """Opening a task with no prediction makes LS call /predict for it alone; the import itself reaches /webhook."""
    [text] = sample_texts(1, skip=N_TASKS)
    label_studio.post(f"/api/projects/{project.id}/import", [{"text": text}])
    new = [t["id"] for t in task_list(label_studio, project.id) if t["id"] not in project.task_ids]
    assert len(new) == 1, new
    task_id = new[0]
    assert not label_studio.get("/api/predictions/", params={"task": task_id}), "imported tasks are not predicted"

    task = label_studio.get(f"/api/tasks/{task_id}")
    assert [p["model_version"] for p in task["predictions"]] == [project.model_version], task["predictions"]
    stored = label_studio.get("/api/predictions/", params={"task": task_id})
    assert [p["model_version"] for p in stored] == [project.model_version]
    [choice] = stored[0]["result"][0]["value"]["choices"]
    assert choice in LABELS

    created = Store(backend.database_url).events(action="TASKS_CREATED", project_id=str(project.id))
    assert any(t["id"] == task_id for e in created for t in json.loads(e["payload"]).get("tasks", [])), \
        "TASKS_CREATED for the imported task did not reach /webhook"


def test_annotation_reaches_backend_webhook(label_studio: LabelStudio, backend: Backend, project: Project) -> None:
    """LS posts ANNOTATION_CREATED synchronously (1 s timeout); the backend must have stored it durably."""
    task_id = project.task_ids[0]
    result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Positive"]}}]
    annotation = label_studio.post(f"/api/tasks/{task_id}/annotations/", {"result": result})
    store = Store(backend.database_url)
    deadline = time.monotonic() + 10
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        events = [e for e in store.events(action="ANNOTATION_CREATED", project_id=str(project.id))
                  if e["task_id"] == task_id]
        if events:
            break
        time.sleep(0.2)
    assert len(events) == 1, f"ANNOTATION_CREATED for task {task_id} not recorded: {store.event_counts()}"
    assert events[0]["annotation_id"] == annotation["id"]
    payload = json.loads(events[0]["payload"])
    assert payload["annotation"]["result"][0]["value"]["choices"] == ["Positive"]
