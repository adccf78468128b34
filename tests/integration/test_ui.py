"""The team's page in a real browser: headless Chromium (Debian's package) against a backend serving a project
after a few real stages, with LLM review; the figures on the page equal the API's, and a screenshot is saved."""

from __future__ import annotations

import csv
import html
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from backend.http.app import create_app
from backend.llm import forget_endpoint_capabilities
from finetune.trainer import run_stage
from model import AutoAnnotatorModel
from tests.conftest import ROOT, SENTIMENT, SENTIMENT_XML
from tests.learning_helpers import annotation_event
from tests.llm_server import FakeLLM, answer, serving
from tests.trust_helpers import seed_trust

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium (missing: make browser)"


def sample(n: int) -> list[tuple[str, str]]:
    with SENTIMENT.open(encoding="utf-8", newline="") as fh:
        return [(r["text"], r["label"]) for r in csv.DictReader(fh)][:n]


def browse(url: str, shot: Path | None = None) -> str:
    """The page's DOM after Chromium loaded it (and a screenshot), from Debian's headless Chromium."""
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=1280,1900", f"--user-data-dir={Path(shot or '/tmp').parent / 'chromium-profile'}"]
    out = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    if shot is not None:
        done = subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    return out.stdout


def figures(dom: str) -> dict[str, object]:
    return {k: json.loads(html.unescape(v)) for k, v in re.findall(r"data-k=\"([^\"]+)\" data-v=\"([^\"]*)\"", dom)
            if v != ""}


@pytest.fixture
def live(session_settings, default_bundle, tmp_path) -> Iterator[tuple[str, AutoAnnotatorModel]]:
    forget_endpoint_capabilities()
    rows = sample(120)
    script = {t: [answer(json.dumps({"label": y}))] for t, y in rows[::2]}
    with serving(FakeLLM(script=script, default=answer('{"label": "abstain"}'))) as fake:
        settings = session_settings.with_(
            data_dir=tmp_path, model_dir=session_settings.model_dir, database_url=f"sqlite:///{tmp_path}/db.sqlite",
            llm_model="fake-model", openai_base_url=fake.base_url, openai_api_key="x", llm_audit_share=0.0,
            review_confidence_threshold=0.9, llm_prices='{"fake-model": [1.0, 2.0]}', train_every_n=10_000,
            bootstrap_min_annotations=10)
        model = AutoAnnotatorModel(settings, background=False)
        seed_trust(model.store.engine, "81", "fake-model", n=300)
        app = create_app(settings, model)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_port}"
        try:
            # Three stages of a real project: predict 40 tasks, people annotate 20, a stage trains, gates, promotes.
            for stage in range(3):
                part = rows[stage * 40:(stage + 1) * 40]
                tasks = [{"id": stage * 40 + i + 1, "data": {"text": t}} for i, (t, _) in enumerate(part)]
                r = requests.post(f"{url}/predict", json={"tasks": tasks, "label_config": SENTIMENT_XML,
                                                         "project": "81.1"}, timeout=120)
                assert r.ok, r.text
                for task, (text, label) in list(zip(tasks, part, strict=True))[:20]:
                    assert requests.post(f"{url}/webhook", json=annotation_event(81, task["id"], text, label,
                                                                                SENTIMENT_XML), timeout=30).ok
                run_stage("81", settings, model.store)
            yield url, model
        finally:
            server.shutdown()


def test_the_project_page_shows_what_the_api_says(live, tmp_path):
    url, model = live
    shot = tmp_path / "project.png"
    dom = browse(f"{url}/ui/projects/81", shot)
    seen = figures(dom)
    usage = requests.get(f"{url}/llm/usage?project=81", timeout=30).json()
    trust = requests.get(f"{url}/trust?project=81", timeout=30).json()
    assert seen["routes.auto"] == usage["routes"].get("auto", 0)
    assert seen["routes.llm"] == usage["routes"].get("llm", 0) > 0
    assert seen["routes.human"] == usage["routes"].get("human", 0)
    assert seen["tasks"] == usage["tasks"] == 120
    assert seen["llm.calls"] == usage["calls"] > 0 and seen["llm.denied"] == usage["denied"]
    assert seen["cost_usd"] == pytest.approx(usage["usd"], abs=1e-6) and usage["usd"] > 0
    assert seen["cost_per_1000"] == pytest.approx(1000 * usage["usd"] / 120, abs=1e-6)
    (led,) = trust["ledgers"]
    assert seen["trust.sentiment.fake-model.checks"] == led["checks"] > 900  # seeded, then the annotations
    for c in led["classes"]:
        assert seen[f"trust.sentiment.fake-model.{c['label']}.n"] == c["n"]
        assert seen[f"trust.sentiment.fake-model.{c['label']}.llm_accuracy"] == c["llm_accuracy"]
    jobs = model.jobs.list(project_id="81")
    assert "Model versions" in dom and dom.count("<circle") >= 3  # one point per stage at least
    assert ("kept aside" in dom) or ("promoted" in dom)
    assert "<svg" in dom and "Routes over time" in dom and "No errors." in dom
    assert len(jobs) == sum(v for k, v in seen.items() if k.startswith("jobs."))
    assert shot.stat().st_size > 20_000
    out = ROOT / ".e2e" / "ui-project.png"  # kept for a look (ignored by git)
    out.parent.mkdir(exist_ok=True)
    shutil.copy(shot, out)
    # One task's provenance, found from the page's search form.
    dom = browse(f"{url}/ui/projects/81?task=2")
    (rec,) = requests.get(f"{url}/tasks/2/provenance?project=81", timeout=30).json()["records"]
    assert re.search(rf"data-k=\"task.route\">{rec['route']}<", dom)


def test_the_index_and_empty_states(live, tmp_path):
    url, model = live
    dom = browse(f"{url}/ui")
    assert "/ui/projects/81" in dom
    model.store.note_project("82", "h", None, [], [], SENTIMENT_XML)
    dom = browse(f"{url}/ui/projects/82")
    assert "Nothing predicted for this project yet" in dom and "No stage has trained yet" in dom
    r = requests.get(f"{url}/ui/projects/999", timeout=30)
    assert r.status_code == 404 and "no project" in r.json()["error"]
    assert requests.get(f"{url}/ui/projects/81?task=abc", timeout=30).status_code == 400
    assert "No prediction recorded for task 5000" in requests.get(f"{url}/ui/projects/81?task=5000", timeout=30).text


def test_the_page_asks_for_the_same_auth_as_the_api(session_settings, default_bundle, tmp_path):
    settings = session_settings.with_(database_url=f"sqlite:///{tmp_path}/db.sqlite", basic_auth_user="team",
                                      basic_auth_pass="secret")
    client = create_app(settings, AutoAnnotatorModel(settings, background=False)).test_client()
    assert client.get("/ui").status_code == 401
    assert client.get("/ui", headers={"Authorization": "Basic dGVhbTpzZWNyZXQ="}).status_code == 200
