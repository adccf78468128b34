"""A big "Retrieve predictions" in a real Label Studio 1.23.2: the backend answers within PREDICT_SECONDS, pushes the
predictions of the tasks it had no time for once they are ready (progress in /jobs), and after a promotion scores the
project again and pushes a prediction only where the label changed.

The backend serves a copy of the session's bundles, so training a new version here touches no other test.
E2E_RETRIEVE_TASKS sets the project's size (default 2,000 texts of ~600 characters that no model has seen)."""

from __future__ import annotations

import csv
import os
import shutil
import time
import uuid
from collections import defaultdict
from typing import Any

import pytest
import requests

from backend.datasets import load_labelled
from backend.push import choices_of, schedule_refresh
from backend.serving.bundles import BundleStore
from backend.settings import Settings
from backend.store import Store
from finetune.training import train_bundle

from .conftest import LABEL_CONFIG, LS_TOKEN, SAMPLE_CSV, Backend, LabelStudio, extra_backend
from .test_label_studio import retrieve_predictions

pytestmark = pytest.mark.e2e

N_TASKS = int(os.environ.get("E2E_RETRIEVE_TASKS", "2000"))
PREDICT_SECONDS = 1.0


def _texts(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    with SAMPLE_CSV.open(newline="", encoding="utf-8") as f:
        rows = [r["text"] for r in csv.DictReader(f)]
    return [f"{tag}-{i} " + " ".join(rows[(i + k) % len(rows)] for k in range(6))[:600] for i in range(n)]


def _by_task(ls: LabelStudio, pid: int) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p in ls.get("/api/predictions/", params={"project": pid}):
        out[p["task"]].append(p)
    return out


def _wait_for_run(url: str, pid: int, kind: str, timeout_s: float = 900) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [r for r in requests.get(f"{url}/jobs", params={"project": pid}, timeout=10).json()["pushes"]
                if r["kind"] == kind]
        if runs and runs[0]["state"] != "running":
            return runs[0]
        time.sleep(2)
    pytest.fail(f"the {kind} pushes of project {pid} did not finish in {timeout_s:.0f} s: {runs}")


@pytest.mark.timeout(1800)
def test_big_retrieve_answers_in_time_pushes_the_rest_and_refreshes_only_what_changed(
        label_studio: LabelStudio, backend: Backend, e2e_dir) -> None:
    ls = label_studio
    models = e2e_dir / "big-retrieve-models"
    shutil.copytree(backend.data_dir / "models", models)
    with extra_backend(e2e_dir, "big-retrieve", models, PREDICT_SECONDS=str(PREDICT_SECONDS),
                       LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=LS_TOKEN) as (url, env):
        created = ls.post("/api/projects/", {"title": "e2e big retrieve", "label_config": LABEL_CONFIG.read_text()})
        pid = created["id"]
        imported = ls.post(f"/api/projects/{pid}/import", [{"text": t} for t in _texts(N_TASKS)])
        assert imported["task_count"] == N_TASKS, imported
        ls.post("/api/ml/", {"url": url, "project": pid, "title": "autoannotator"})
        assert ls.get(f"/api/projects/{pid}")["model_version"] == "autoannotator"  # shown: the backend's version
        version = requests.post(url + "/setup", json={"project": f"{pid}.0", "schema": LABEL_CONFIG.read_text()},
                                timeout=30).json()["model_version"]

        started = time.monotonic()
        retrieve_predictions(ls, pid)
        took = time.monotonic() - started
        assert took < 60, f"Retrieve predictions of {N_TASKS} tasks took {took:.1f} s"
        pushed = _wait_for_run(url, pid, "retrieve")  # what the /predict had no time for, pushed since
        late = pushed["tasks"]
        assert 0 < late < N_TASKS, f"{late} of {N_TASKS} tasks left for later: nothing was cut short"
        assert (pushed["state"], pushed["done"], pushed["pushed"]) == ("done", late, late), pushed
        stored = _by_task(ls, pid)
        assert len(stored) == N_TASKS
        assert all(len(ps) == 1 and ps[0]["model_version"] == version for ps in stored.values())
        retrieve_predictions(ls, pid)  # nothing is left without a prediction of the version: nothing duplicated
        assert sum(len(ps) for ps in _by_task(ls, pid).values()) == N_TASKS

        # A promotion: a new version (TF-IDF and naive Bayes alone) disagrees with the ensemble on some tasks.
        settings = Settings.from_env(env)
        labels = ["Positive", "Negative", "Neutral"]
        new, _ = train_bundle(BundleStore(models), labels, False, load_labelled(SAMPLE_CSV),
                              [{"name": "tfidf-nb", "family": "tfidf", "params": {"classifier": "nb"}}],
                              **settings.runtime)
        queued = schedule_refresh(settings, Store(settings.database_url), str(pid))
        assert queued == N_TASKS
        run = _wait_for_run(url, pid, "refresh")
        assert run["state"] == "done" and run["pushed"] + run["unchanged"] == N_TASKS, run
        assert 0 < run["pushed"] < N_TASKS and run["pushed_share"] == round(run["pushed"] / N_TASKS, 4), run
        after = _by_task(ls, pid)
        refreshed = {t: ps for t, ps in after.items() if any(p["model_version"] == new.version for p in ps)}
        assert len(refreshed) == run["pushed"]
        for ps in refreshed.values():  # pushed only where the label changed, and only once
            old = [choices_of(p["result"]) for p in ps if p["model_version"] == version]
            now = [choices_of(p["result"]) for p in ps if p["model_version"] == new.version]
            assert len(now) == 1 and old and now[0] != old[0]
        print(f"retrieve: {N_TASKS - late} answered, Label Studio's action took {took:.1f} s, {late} pushed after "
              f"({pushed['seconds']} s of work); refresh: {run['pushed']} pushed, {run['unchanged']} unchanged "
              f"({run['seconds']} s of work)")
