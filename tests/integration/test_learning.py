"""The continual-learning loop in its embedded form (no Redis: an in-process worker thread), driven
through /webhook like Label Studio drives it: corrections → stage → gate → promotion → new version."""

from __future__ import annotations

import json
import time

import pytest

from backend.datasets import load_labelled
from backend.http.app import create_app
from backend.labelstudio.config import project_bundle_key
from backend.serving.bundles import BundleStore
from finetune.corrections import CorrectionLog, is_holdout
from finetune.training import train_bundle
from model import AutoAnnotatorModel
from tests.conftest import SENTIMENT, SENTIMENT_XML
from tests.learning_helpers import annotation_event, stream

LABELS = ["Positive", "Negative", "Neutral"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, session_settings):
    """A shared TF-IDF bundle from the shipped sample: the 'off-the-shelf' model a project starts from."""
    data_dir = tmp_path_factory.mktemp("learning")
    settings = session_settings.with_(data_dir=data_dir, model_dir=data_dir / "models",
                                      database_url=f"sqlite:///{data_dir}/db.sqlite", train_every_n=20,
                                      bootstrap_min_annotations=10, holdout_every=5, dispatch_seconds=0.2,
                                      bundle_refresh_seconds=0.0, replay_size=800)
    ref, _ = train_bundle(BundleStore(settings.model_dir), LABELS, False, load_labelled(SENTIMENT),
                          [{"name": "tfidf", "family": "tfidf", "params": {}}])
    return settings, ref


def make_client(settings):
    model = AutoAnnotatorModel(settings)
    return create_app(settings, model).test_client(), model


def setup_version(client, pid: int, config: str = SENTIMENT_XML) -> str:
    r = client.post("/setup", json={"project": f"{pid}.1795746419", "schema": config})
    assert r.status_code == 200, r.json
    return r.json["model_version"]


def wait_job(client, pid: int, n_finished: int = 1, timeout: float = 180) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = client.get(f"/jobs?project={pid}").json["jobs"]
        finished = [j for j in jobs if j["status"] in ("promoted", "rejected", "failed", "skipped")]
        if len(finished) >= n_finished and not [j for j in jobs if j["status"] in ("pending", "queued", "running")]:
            return jobs
        time.sleep(0.3)
    raise AssertionError(f"jobs did not finish: {client.get(f'/jobs?project={pid}').json}")


def predict(client, pid: int, texts: list[str], config: str = SENTIMENT_XML) -> list[dict]:
    body = {"tasks": [{"id": i, "data": {"text": t}} for i, t in enumerate(texts)], "label_config": config,
            "project": f"{pid}.1795746419"}
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.json
    return r.json["results"]


def test_corrections_train_a_project_version_that_is_served_then_rolled_back(base):
    settings, shared = base
    client, model = make_client(settings)
    pid = 11
    assert setup_version(client, pid) == shared.version
    for task_id, (text, label) in enumerate(stream(20), start=1):
        r = client.post("/webhook", json=annotation_event(pid, task_id, text, label, config=SENTIMENT_XML))
        assert r.status_code == 200 and r.json["corrections"] == 1
    assert r.json["training_job"]  # the 20th correction asked for a stage
    jobs = wait_job(client, pid)
    assert jobs[0]["status"] == "promoted", jobs[0]
    v1 = setup_version(client, pid)
    assert v1 != shared.version and v1 == jobs[0]["versions"]["sentiment"]
    assert {r["model_version"] for r in predict(client, pid, ["so happy today", "awful"])} == {v1}
    # another project with the same labels still gets the shared bundle
    assert setup_version(client, 99) == shared.version

    store = BundleStore(settings.model_dir)
    key = project_bundle_key("11", "sentiment")
    manifest = store.manifest(store.current(key))
    assert manifest.data["base_version"] == shared.version
    assert manifest.data["replay_rows"] == 800
    assert len(manifest.data["corrections"]) + len(manifest.data["holdout"]) == 20
    assert not set(manifest.data["corrections"]) & set(manifest.data["holdout"])
    # every correction trains: the temperature's calibration rows come from the replay only
    assert manifest.metrics["n_holdout"] == int(800 * 0.15)
    assert manifest.metrics["n_train"] == len(manifest.data["corrections"]) + 800 - int(800 * 0.15)
    # The temperature: the held-out corrections beside the held-out replayed rows (CALIBRATE_ON=project)
    cal = manifest.metrics["calibration"]
    assert cal["on"] == "project holdout + replay holdout" and cal["project_rows"] == len(manifest.data["holdout"])
    assert cal["rows"] == len(manifest.data["holdout"]) + int(800 * 0.15)
    gate = json.loads((store.current(key).path / "gate.json").read_text())
    assert gate["promoted"] and gate["current"] == shared.version
    # The domain router is anchored on the shared bundle; 16 texts are too few to switch it on.
    assert manifest.anchor["key"] == shared.key and manifest.anchor["version"] == shared.version
    assert manifest.anchor["active"] is False and "needs 20 project" in manifest.anchor["reason"]
    assert model.store.texts("11") == ["so happy today", "awful"]  # /predict noted the project's task texts

    # a second stage from 20 more corrections, then roll back twice
    for task_id, (text, label) in enumerate(stream(20, skip=20), start=21):
        client.post("/webhook", json=annotation_event(pid, task_id, text, label, config=SENTIMENT_XML))
    jobs = wait_job(client, pid, n_finished=2)
    v2 = setup_version(client, pid)
    assert jobs[0]["status"] == "promoted" and v2 == jobs[0]["versions"]["sentiment"] != v1
    later = store.manifest(store.current(key)).anchor
    assert (later["key"], later["version"]) == (shared.key, shared.version)  # the anchor stays the one it started on
    trained = {r["text"] for r in CorrectionLog(model.store, 5).rows("11", "sentiment") if not r["holdout"]}
    assert later["project_texts"] == len(trained | {"so happy today", "awful"})  # + the texts /predict saw
    assert store.rollback(key) == v1
    assert setup_version(client, pid) == v1
    assert {r["model_version"] for r in predict(client, pid, ["so happy today"])} == {v1}
    assert store.rollback(key) is None  # no earlier project version: the shared bundle serves again
    assert setup_version(client, pid) == shared.version


def test_start_training_enqueues_at_once_and_a_worse_candidate_is_kept_aside(base):
    settings, shared = base
    client, _ = make_client(settings.with_(train_every_n=10_000))
    pid = 12
    setup_version(client, pid)
    rotate = {"Positive": "Negative", "Negative": "Neutral", "Neutral": "Positive"}
    held = 0
    for task_id, (text, label) in enumerate(stream(150, skip=100), start=1):
        if is_holdout(str(pid), task_id, settings.holdout_every):
            held += 1
        else:
            label = rotate[label]  # deliberately wrong training labels
        r = client.post("/webhook", json=annotation_event(pid, task_id, text, label, config=SENTIMENT_XML))
        assert "training_job" not in r.json
    assert held >= 10
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": pid, "label_config": "..."}})
    assert r.status_code == 200 and r.json["training_job"]
    jobs = wait_job(client, pid)
    assert jobs[0]["status"] == "rejected", jobs[0]
    assert "< current" in jobs[0]["outcome"]
    assert setup_version(client, pid) == shared.version  # still served
    store = BundleStore(settings.model_dir)
    assert store.current(project_bundle_key("12", "sentiment")) is None
    rejected = [v for v in store.versions(project_bundle_key("12", "sentiment"))]
    assert len(rejected) == 1
    gate = json.loads((store.root / project_bundle_key("12", "sentiment") / "versions" / rejected[0] /
                       "gate.json").read_text())
    assert not gate["promoted"] and gate["candidate_macro_f1"] < gate["current_macro_f1"]


def test_label_config_changes_are_followed(base):
    settings, shared = base
    client, _ = make_client(settings.with_(train_every_n=10_000))
    pid = 13
    texts = [t for t, _ in stream(30, skip=300)]
    with_mixed = SENTIMENT_XML.replace('<Choice value="Neutral"/>', '<Choice value="Neutral"/><Choice value="Mixed"/>')
    r = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": pid, "label_config": with_mixed}})
    assert r.json["label_config_changed"] is True
    # the shared 3-label bundle still serves the 4-choice config, and never says "Mixed"
    assert setup_version(client, pid, with_mixed) == shared.version
    labels = {p["result"][0]["value"]["choices"][0] for p in predict(client, pid, texts, with_mixed)}
    assert labels <= {"Positive", "Negative", "Neutral"}
    # annotators use the new choice; the next stage learns it
    data = stream(60, skip=400)
    for task_id, (text, label) in enumerate(data, start=1):
        label = "Mixed" if task_id % 4 == 0 else label
        text = f"{text} but also kind of mixed feelings" if label == "Mixed" else text
        client.post("/webhook", json=annotation_event(pid, task_id, text, label, config=with_mixed))
    client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": pid}})
    jobs = wait_job(client, pid)
    assert jobs[0]["status"] == "promoted", jobs[0]
    store = BundleStore(settings.model_dir)
    assert store.manifest(store.current(project_bundle_key("13", "sentiment"))).labels == \
        ["Positive", "Negative", "Neutral", "Mixed"]
    mixed = predict(client, pid, ["I love it but also kind of mixed feelings"] * 2, with_mixed)
    assert mixed[0]["result"][0]["value"]["choices"] == ["Mixed"]
    # a removed choice is never predicted again, even by the bundle that knows it
    no_neutral = with_mixed.replace('<Choice value="Neutral"/>', "")
    assert setup_version(client, pid, no_neutral) == jobs[0]["versions"]["sentiment"]
    labels = {p["result"][0]["value"]["choices"][0] for p in predict(client, pid, texts, no_neutral)}
    assert "Neutral" not in labels and labels <= {"Positive", "Negative", "Mixed"}


def test_deleted_annotations_are_retracted(base):
    settings, _ = base
    client, model = make_client(settings)
    setup_version(client, 14)
    body = annotation_event(14, 1, "meh", "Neutral", config=SENTIMENT_XML, annotation_id=555)
    client.post("/webhook", json=body)
    assert len(model.intake.corrections.rows("14")) == 1
    r = client.post("/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 555}],
                                      "project": {"id": 14}})
    assert r.json["retracted"] == 1 and model.intake.corrections.rows("14") == []


def test_cold_start_trains_a_project_with_no_bundle_and_rollback_cli(base, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    settings, _ = base
    client, _ = make_client(settings.with_(bootstrap_min_annotations=10))
    pid = 15
    config = SENTIMENT_XML.replace("Positive", "Joy").replace("Negative", "Anger").replace("Neutral", "Calm")
    assert setup_version(client, pid, config) == "autoannotator-untrained"
    words = {"Joy": "wonderful happy delighted", "Anger": "furious outraged livid", "Calm": "quiet peaceful still"}
    jobs = []
    for task_id in range(1, 19):
        label = ["Joy", "Anger", "Calm"][task_id % 3]
        text = f"{words[label]} day number {task_id}"
        r = client.post("/webhook", json=annotation_event(pid, task_id, text, label, config=config))
        jobs.append(r.json.get("training_job"))
    assert jobs[:8] == [None] * 8 and any(jobs)  # no stage before BOOTSTRAP_MIN_ANNOTATIONS human annotations
    done = wait_job(client, pid)
    assert done[0]["status"] == "promoted" and "cold start" in done[-1]["reason"], done
    version = setup_version(client, pid, config)
    assert version.startswith("aa-")
    labels = [p["result"][0]["value"]["choices"][0] for p in predict(client, pid, ["furious outraged livid"], config)]
    assert labels == ["Anger"]
    cli = str(Path(sys.executable).parent / "autoannotator")
    env = {**os.environ, "MODEL_DIR": str(settings.model_dir), "DATA_DIR": str(settings.data_dir)}
    promoted = [j for j in done if j["status"] == "promoted"]
    for n in range(len(promoted)):  # newest first: each rollback serves the version promoted before
        out = subprocess.run([cli, "rollback", "--project", str(pid), "--control", "sentiment"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        expected = promoted[n + 1]["versions"]["sentiment"] if n + 1 < len(promoted) else None
        assert json.loads(out.stdout)["current"] == expected, (out.stdout, done, jobs)
    assert setup_version(client, pid, config) == "autoannotator-untrained"
