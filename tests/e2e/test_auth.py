"""A backend behind basic auth in a real Label Studio 1.23.2. Label Studio makes the ML webhook without headers, so
on its own every annotation would be refused. The backend, given LABEL_STUDIO_URL and an API key, puts its
credentials on that webhook through Label Studio's API; annotations then become corrections and Start Training runs a
stage. A webhook that still comes without credentials is stored, shown in /health, and applied once Label Studio
confirms the annotation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from backend.store import EventState, Store
from finetune.corrections import CorrectionLog

from .conftest import LABEL_CONFIG, LS_TOKEN, Backend, LabelStudio, extra_backend
from .test_training import FINISHED, JOB_TIMEOUT_S, labelled_samples, poll

pytestmark = pytest.mark.e2e

USER, PASSWORD = "lsuser", "s3cret"
CONTROL = "sentiment"


@dataclass
class AuthBackend:
    url: str
    database_url: str

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, auth=(USER, PASSWORD), timeout=10, **kw)


@pytest.fixture(scope="module")
def auth_backend(label_studio: LabelStudio, backend: Backend, e2e_dir) -> Iterator[AuthBackend]:
    with extra_backend(e2e_dir, "auth-backend", backend.data_dir / "models", BASIC_AUTH_USER=USER,
                       BASIC_AUTH_PASS=PASSWORD, LABEL_STUDIO_URL=label_studio.url,
                       LABEL_STUDIO_API_KEY=LS_TOKEN) as (url, env):
        yield AuthBackend(url, f"sqlite:///{env['DATA_DIR']}/autoannotator.db")


def _webhook(ls: LabelStudio, pid: int, url: str) -> dict[str, Any] | None:
    hooks = [h for h in ls.get("/api/webhooks/", params={"project": pid}) if h["url"] == url + "/webhook"]
    return hooks[0] if hooks else None


def _annotate(ls: LabelStudio, tid: int, label: str) -> None:
    result = [{"from_name": CONTROL, "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
    ls.post(f"/api/tasks/{tid}/annotations/", {"result": result})


def test_annotations_reach_a_backend_behind_basic_auth_and_a_stage_runs(label_studio: LabelStudio,
                                                                        auth_backend: AuthBackend) -> None:
    ls, be = label_studio, auth_backend
    samples = labelled_samples()[:14]
    pid = ls.post("/api/projects/", {"title": "e2e basic auth", "label_config": LABEL_CONFIG.read_text()})["id"]
    ls.post(f"/api/projects/{pid}/import", [{"text": t} for t, _ in samples])
    tasks = sorted(ls.get("/api/tasks/", params={"project": pid, "page_size": 100})["tasks"], key=lambda t: t["id"])
    label_of = {t["id"]: dict(samples)[t["data"]["text"]] for t in tasks}
    # Connected as a user does it with "Basic auth" in the ML form: Label Studio validates through /setup.
    ml = ls.post("/api/ml/", {"url": be.url, "project": pid, "title": "autoannotator", "auth_method": "BASIC_AUTH",
                              "basic_auth_user": USER, "basic_auth_pass": PASSWORD})
    hook = poll(lambda: (h := _webhook(ls, pid, be.url)) and (h.get("headers") or {}).get("Authorization") and h, 60)
    assert hook, f"the backend did not put its credentials on the webhook: {_webhook(ls, pid, be.url)}"
    assert hook["headers"]["Authorization"].startswith("Basic ")

    log = CorrectionLog(Store(be.database_url))
    first = list(label_of)[:10]
    for tid in first:
        _annotate(ls, tid, label_of[tid])
    rows = poll(lambda: (r := log.rows(str(pid), CONTROL)) and len(r) == len(first) and r, 15)
    assert rows, f"corrections: {log.rows(str(pid), CONTROL)}; health: {requests.get(be.url + '/health').json()}"
    assert sorted(r["task_id"] for r in rows) == first

    # Start Training is a START_TRAINING webhook: it too carries the credentials now.
    ls.post(f"/api/ml/{ml['id']}/train", expect=200)
    jobs = poll(lambda: be.get("/jobs", params={"project": pid}).json()["jobs"], 15)
    assert jobs and len(jobs) == 1, jobs

    def finished() -> dict[str, Any] | None:
        job = be.get(f"/jobs/{jobs[0]['id']}").json()
        return job if job["status"] in FINISHED else None

    job = poll(finished, JOB_TIMEOUT_S, 1.0)
    assert job and job["status"] in ("promoted", "rejected"), job  # a stage ran on the corrections

    # Someone removes the header (or the webhook was made again): the next annotation is refused, stored, shown,
    # and the backend sets the header again and applies the annotation once Label Studio confirms it.
    ls.patch(f"/api/webhooks/{hook['id']}/", {"url": hook["url"], "headers": {}})
    late = list(label_of)[10]
    t0 = time.time()
    _annotate(ls, late, label_of[late])
    store = Store(be.database_url)
    refused = poll(lambda: store.last_event(EventState.UNAUTHENTICATED), 10)
    assert refused and refused["project_id"] == str(pid), refused
    health = requests.get(be.url + "/health", timeout=10).json()["webhooks"]
    assert health["last_unauthenticated"]["event_id"] == refused["id"] and "LABEL_STUDIO_URL" in health["hint"]
    recovered = poll(lambda: any(r["task_id"] == late for r in log.rows(str(pid), CONTROL)), 60)
    assert recovered, f"the refused annotation was not applied: {store.event_states()}"
    assert (_webhook(ls, pid, be.url)["headers"] or {}).get("Authorization") == hook["headers"]["Authorization"]
    assert store.events_in(EventState.UNAUTHENTICATED, str(pid)) == []
    assert time.time() - t0 < 60
