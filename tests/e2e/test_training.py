"""Continual learning driven from Label Studio: annotate, press "Start Training", serve the new version.

One project of its own (module fixtures), in file order: predictions of the shipped bundle, human
annotations through LS's API (they reach /webhook and become corrections), `POST /api/ml/{id}/train`
as the UI's Start Training button sends it (LS turns it into a START_TRAINING webhook), the training
job run by the backend's in-process worker until it is promoted, then LS picking up the project's new
model_version from /setup and "Retrieve predictions" re-predicting every task with it exactly once.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from backend.settings import Settings
from backend.store import Store
from finetune.corrections import CorrectionLog, is_holdout
from finetune.policy import Policy

from .conftest import LABEL_CONFIG, SAMPLE_CSV, Backend, LabelStudio

pytestmark = pytest.mark.e2e

SETTINGS = Settings.from_env()  # the backend runs with this same environment (conftest._base_env)
CONTROL = "sentiment"
SCREEN_CHUNK = 300
N_UNANNOTATED = 10  # tasks the bundle gets right, never annotated: re-predicted all the same
# One below TRAIN_EVERY_N: enough to learn from, but no automatic stage, so the only job is Start Training's.
N_ANNOTATE = SETTINGS.train_every_n - 1
# Enough held-out items for the gate to rule (with fewer it waves any candidate through).
N_HOLDOUT = Policy().gate_min_holdout + 1
JOB_TIMEOUT_S = 150.0
FINISHED = {"promoted", "rejected", "failed", "skipped"}
RETRIEVE = "/api/dm/actions?id=retrieve_tasks_predictions&project={pid}"
ALL_ITEMS = {"selectedItems": {"all": True, "excluded": []}}


def labelled_samples() -> list[tuple[str, str]]:
    """(text, true label) for each distinct non-empty text of the sample CSV (the shared bundle's data)."""
    rows: dict[str, str] = {}
    with SAMPLE_CSV.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = (row.get("text") or "").strip()
            if text and text not in rows:
                rows[text] = row["label"].strip()
    return list(rows.items())


@dataclass
class Project:
    id: int
    ml_id: int
    task_ids: list[int]
    label_of: dict[int, str]  # task id -> true label
    mispredicted: list[int]  # tasks whose text the shared bundle gets wrong: what annotators correct
    old_version: str


def predictions(ls: LabelStudio, pid: int) -> list[dict[str, Any]]:
    return ls.get("/api/predictions/", params={"project": pid})


def retrieve_predictions(ls: LabelStudio, pid: int) -> dict[str, Any]:
    return ls.post(RETRIEVE.format(pid=pid), ALL_ITEMS)


def choice_of(prediction: dict[str, Any]) -> str | None:
    return next((r["value"]["choices"][0] for r in prediction["result"] if r["from_name"] == CONTROL), None)


def jobs_of(backend: Backend, pid: int) -> list[dict[str, Any]]:
    resp = requests.get(backend.url + "/jobs", params={"project": pid}, timeout=10)
    assert resp.ok, resp.text
    return resp.json()["jobs"]


def poll(check: Any, timeout_s: float, interval_s: float = 0.5) -> Any:
    """Call `check` until it returns something truthy; the last value (falsy) when time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def screen(backend: Backend, pid: int) -> Iterator[tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
    """The sample texts, a chunk per /predict call, split by whether the shared bundle gets them wrong."""
    samples = labelled_samples()
    for start in range(0, len(samples), SCREEN_CHUNK):
        chunk = samples[start : start + SCREEN_CHUNK]
        resp = requests.post(backend.url + "/predict", timeout=120, json={
            "tasks": [{"id": i, "data": {"text": t}} for i, (t, _) in enumerate(chunk)],
            "label_config": LABEL_CONFIG.read_text(), "project": f"{pid}.0"})
        assert resp.ok, resp.text[:2000]
        wrong, right = [], []
        for sample, pred in zip(chunk, resp.json()["results"], strict=True):
            (wrong if choice_of(pred) != sample[1] else right).append(sample)
        yield wrong, right


@pytest.fixture(scope="module")
def project(label_studio: LabelStudio, backend: Backend) -> Project:
    """Tasks the shared bundle gets wrong, imported until enough of them fall in the holdout, plus a few
    it gets right that nobody annotates.

    Which tasks are held out is a hash of project and task ids, which depend on what ran before; the
    gate compares macro-F1 on those few items. Annotating tasks the shared bundle gets right (it was
    trained on these very texts) made the gate reject the candidate on 6 items (0.630 < 0.667 - 0.02),
    depending on the ids. Correcting the model's mistakes, as annotators reviewing predictions do, gives
    the served version a macro-F1 of 0 on the holdout, so the gate rules and cannot reject: promotion is
    deterministic whatever the ids.
    """
    ls = label_studio
    created = ls.post("/api/projects/", {"title": "e2e training", "label_config": LABEL_CONFIG.read_text()})
    pid = created["id"]
    ml = ls.post("/api/ml/", {"url": backend.url, "project": pid, "title": "autoannotator"})
    version = ls.get(f"/api/ml/{ml['id']}")["model_version"]
    assert version == backend.trained_version, "a new project starts on the shared sample bundle"
    label_of: dict[int, str] = {}
    right: list[tuple[str, str]] = []
    # Chunk by chunk, stopping as soon as there are enough: /predict costs ~20 ms a text on 2 CPUs.
    for wrong, ok in screen(backend, pid):
        right += ok
        if wrong:
            label_of.update(import_tasks(ls, pid, wrong))
        held = sum(is_holdout(str(pid), t, SETTINGS.holdout_every) for t in label_of)
        if held >= N_HOLDOUT and len(label_of) - held >= N_ANNOTATE - N_HOLDOUT:
            break
    else:
        pytest.fail(f"the sample bundle gets too few sample texts wrong ({len(label_of)}) for this test")
    mispredicted = sorted(label_of)
    label_of.update(import_tasks(ls, pid, right[:N_UNANNOTATED]))
    return Project(id=pid, ml_id=ml["id"], task_ids=sorted(label_of), label_of=label_of,
                   mispredicted=mispredicted, old_version=version)


def import_tasks(ls: LabelStudio, pid: int, samples: list[tuple[str, str]]) -> dict[int, str]:
    """Import the texts; returns the new tasks' ids with their true labels."""
    before = {t["id"] for t in ls.get("/api/tasks/", params={"project": pid, "page_size": 1000})["tasks"]}
    imported = ls.post(f"/api/projects/{pid}/import", [{"text": t} for t, _ in samples])
    assert imported["task_count"] == len(samples), imported
    truth = dict(samples)
    tasks = ls.get("/api/tasks/", params={"project": pid, "page_size": 1000})["tasks"]
    return {t["id"]: truth[t["data"]["text"]] for t in tasks if t["id"] not in before}


@pytest.fixture(scope="module")
def old_predictions(label_studio: LabelStudio, project: Project) -> list[dict[str, Any]]:
    """Retrieve predictions before training: every task then holds one of the shared bundle's."""
    retrieve_predictions(label_studio, project.id)
    preds = predictions(label_studio, project.id)
    assert sorted(p["task"] for p in preds) == project.task_ids
    assert {p["model_version"] for p in preds} == {project.old_version}
    return preds


@pytest.fixture(scope="module")
def annotated(label_studio: LabelStudio, backend: Backend, project: Project,
              old_predictions: list[dict[str, Any]]) -> list[int]:
    """N_ANNOTATE mispredicted tasks (N_HOLDOUT of them held out) corrected with their true labels in LS."""
    held = [t for t in project.mispredicted if is_holdout(str(project.id), t, SETTINGS.holdout_every)]
    kept = [t for t in project.mispredicted if t not in held]
    task_ids = sorted(held[:N_HOLDOUT] + kept[: N_ANNOTATE - N_HOLDOUT])
    old = {p["task"]: choice_of(p) for p in old_predictions}
    assert all(old[t] != project.label_of[t] for t in task_ids), "LS got other predictions than /predict did"
    for tid in task_ids:
        result = [{"from_name": CONTROL, "to_name": "text", "type": "choices",
                   "value": {"choices": [project.label_of[tid]]}}]
        label_studio.post(f"/api/tasks/{tid}/annotations/", {"result": result})
    log = CorrectionLog(Store(backend.database_url), SETTINGS.holdout_every)
    rows = poll(lambda: (r := log.rows(str(project.id), CONTROL)) and len(r) == len(task_ids) and r, 10)
    assert rows, f"corrections recorded: {log.rows(str(project.id), CONTROL)}"
    return task_ids


@pytest.fixture(scope="module")
def training_job(label_studio: LabelStudio, backend: Backend, project: Project, annotated: list[int]
                 ) -> dict[str, Any]:
    """Start Training as the UI sends it, then the backend's job polled until it ends."""
    assert jobs_of(backend, project.id) == [], "fewer than TRAIN_EVERY_N annotations must not start a stage"
    answer = label_studio.post(f"/api/ml/{project.ml_id}/train", expect=200)
    assert answer is None, f"LS 1.23.2 answers Start Training with an empty 200: {answer!r}"
    jobs = poll(lambda: jobs_of(backend, project.id), 10)
    assert len(jobs) == 1, jobs
    job_id = jobs[0]["id"]

    def finished() -> dict[str, Any] | None:
        resp = requests.get(f"{backend.url}/jobs/{job_id}", timeout=10)
        assert resp.ok, resp.text
        return resp.json() if resp.json()["status"] in FINISHED else None

    job = poll(finished, JOB_TIMEOUT_S, 1.0)
    assert job, f"training job {job_id} not finished after {JOB_TIMEOUT_S:.0f} s: {jobs_of(backend, project.id)}"
    return job


def test_annotations_become_corrections_with_a_stable_holdout(backend: Backend, project: Project,
                                                              annotated: list[int]) -> None:
    rows = CorrectionLog(Store(backend.database_url)).rows(str(project.id), CONTROL)
    assert sorted(r["task_id"] for r in rows) == annotated
    for r in rows:
        assert r["source"] == "human" and r["choices"] == [project.label_of[r["task_id"]]], r
        assert r["holdout"] == is_holdout(str(project.id), r["task_id"], SETTINGS.holdout_every), r


def test_start_training_reaches_the_backend_as_a_webhook(backend: Backend, project: Project,
                                                         training_job: dict[str, Any]) -> None:
    """Start Training is a START_TRAINING webhook (feature flag on in 1.23.2), not the legacy /train."""
    events = Store(backend.database_url).events(action="START_TRAINING", project_id=str(project.id))
    assert len(events) == 1, events
    assert json.loads(events[0]["payload"])["project"]["id"] == project.id
    assert training_job["reason"] == "START_TRAINING", training_job
    assert [j["id"] for j in jobs_of(backend, project.id)] == [training_job["id"]]


def test_training_job_is_promoted(training_job: dict[str, Any], project: Project) -> None:
    assert training_job["status"] == "promoted", training_job
    new = training_job["versions"][CONTROL]
    assert new.startswith("aa-") and new != project.old_version, training_job
    assert f"{new} promoted" in training_job["outcome"], training_job
    # The gate ruled on the frozen human holdout, where the served version got every item wrong.
    assert f"vs current 0.000 on {N_HOLDOUT} held-out items" in training_job["outcome"], training_job


def test_label_studio_sees_the_new_model_version(label_studio: LabelStudio, backend: Backend, project: Project,
                                                 training_job: dict[str, Any]) -> None:
    """GET /api/ml/{id} makes LS call /setup; serving picks the promotion up within BUNDLE_REFRESH_SECONDS."""
    new = training_job["versions"][CONTROL]
    ml = poll(lambda: (m := label_studio.get(f"/api/ml/{project.ml_id}"))["model_version"] == new and m,
              SETTINGS.bundle_refresh_seconds + 10)
    assert ml, f"LS still shows {label_studio.get(f'/api/ml/{project.ml_id}')['model_version']}, not {new}"
    assert ml["state"] == "CO", ml
    # The project's bundle is its own: a project without one still gets the shared sample bundle.
    other = requests.post(backend.url + "/setup", json={"project": "999999.0", "schema": LABEL_CONFIG.read_text()},
                          timeout=30)
    assert other.ok and other.json()["model_version"] == backend.trained_version, other.text


def test_retrieve_predictions_repredicts_every_task_with_the_new_version(
        label_studio: LabelStudio, project: Project, training_job: dict[str, Any],
        old_predictions: list[dict[str, Any]]) -> None:
    new = training_job["versions"][CONTROL]
    got = retrieve_predictions(label_studio, project.id)
    n_tasks = len(project.task_ids)
    assert got.get("processed_items") == n_tasks, got
    preds = predictions(label_studio, project.id)
    fresh = [p for p in preds if p["model_version"] == new]
    assert sorted(p["task"] for p in fresh) == project.task_ids, "not exactly one new-version prediction per task"
    for p in fresh:
        assert p["score"] is not None and 0 < p["score"] <= 1, p
        [region] = p["result"]
        assert region["from_name"] == CONTROL and region["value"]["choices"][0] in {"Positive", "Negative", "Neutral"}
    old = sorted(p["id"] for p in preds if p["model_version"] == project.old_version)
    assert old == sorted(p["id"] for p in old_predictions), "the old version's predictions must stay as they were"
    assert len(preds) == 2 * n_tasks, [p["model_version"] for p in preds]

    # Pressing it again predicts nothing: every task holds a prediction of the current version.
    retrieve_predictions(label_studio, project.id)
    assert sorted(p["id"] for p in predictions(label_studio, project.id)) == sorted(p["id"] for p in preds)


def test_new_version_learned_the_corrections(label_studio: LabelStudio, project: Project, annotated: list[int],
                                             training_job: dict[str, Any]) -> None:
    """The shared bundle got every annotated task wrong; the project's version learned those it trained on."""
    new = training_job["versions"][CONTROL]
    now = {p["task"]: choice_of(p) for p in predictions(label_studio, project.id) if p["model_version"] == new}
    trained = [t for t in annotated if not is_holdout(str(project.id), t, SETTINGS.holdout_every)]
    learned = [t for t in trained if now[t] == project.label_of[t]]
    assert len(learned) >= 2 / 3 * len(trained), f"only {len(learned)} of {len(trained)} corrections learned"
