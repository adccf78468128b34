"""Planned ensembles serving predictions end to end (issue #6).

1. A new project's first /setup plans its control (PLAN_ON_SETUP=auto, no LLM), the plan's pretrained checkpoint
   becomes a zero-shot bundle in the background, and /predict answers with its labels mapped onto the project's.
2. `autoannotator plan --build` on a labelled sample, with a hub id found in a pre-filled Hugging Face cache
   (HF_HOME) and one that is not: the planned ensemble — that checkpoint plus the offline defaults — is trained,
   written and served through /predict.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.planning.plan import PlanStore
from backend.settings import Settings
from tests.conftest import ROOT
from tests.planning_helpers import (
    FINANCE,
    FINANCE_XML,
    catalog_file,
    hf_cache_with,
    local_entry,
    save_checkpoint,
    sentiment_rows,
)

CLI = str(Path(sys.executable).parent / "autoannotator")
ID2LABEL = {0: "NEG", 1: "NEU", 2: "POS"}
TEXTS = ["i love this wonderful stock", "what an awful, terrible day", "please send the report and the schedule"]


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("serving-ckpt") / "good", ID2LABEL, "trained")


def app_for(settings):
    from backend.http.app import create_app
    from model import AutoAnnotatorModel

    model = AutoAnnotatorModel(settings)
    return model, create_app(settings, model).test_client()


def predict(client, project, texts=TEXTS):
    body = {"tasks": [{"id": i + 1, "data": {"text": t}} for i, t in enumerate(texts)], "label_config": FINANCE_XML,
            "project": project}
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.json
    return r.json["results"]


def test_first_setup_plans_and_serves_a_zero_shot_ensemble(tmp_path, good_checkpoint):
    catalog = catalog_file(tmp_path / "catalog.json",
                           [local_entry("acme/minilm-sentiment", good_checkpoint, ["NEG", "NEU", "POS"])])
    settings = Settings.from_env({}, data_dir=tmp_path, catalog_file=str(catalog), bundle_refresh_seconds=0.0,
                                 encoder_dtype="float32")
    model, client = app_for(settings)
    first = client.post("/setup", json={"project": "42.1700000000", "schema": FINANCE_XML}).json
    assert first["untrained_controls"] == ["tone"] and first["planning"] == ["tone"]
    model.planner.wait(300)
    plan = PlanStore(settings.model_dir).get("project-42__tone")
    assert plan.source == "matcher"
    assert plan.mappings == {"minilm-sentiment": {"NEG": "Bearish", "NEU": "Neutral", "POS": "Bullish"}}
    assert plan.applied["zero_shot"] == ["minilm-sentiment"]
    second = client.post("/setup", json={"project": "42.1700000000", "schema": FINANCE_XML}).json
    assert "untrained_controls" not in second and "planning" not in second
    assert second["model_version"] == plan.applied["bundle"]
    results = predict(client, "42.1700000000")
    assert [r["result"][0]["value"]["choices"] for r in results] == [["Bullish"], ["Bearish"], ["Neutral"]]
    assert all(r["model_version"] == plan.applied["bundle"] for r in results)
    (record,) = client.get("/tasks/1/provenance?project=42").json["records"]
    assert record["votes"] == [["Bullish"]]  # one specialist: the planned checkpoint
    # another project with the same choices gets its own plan; PLAN_ON_SETUP=explicit plans nothing by itself
    _, explicit = app_for(settings.with_(plan_on_setup="explicit"))
    out = explicit.post("/setup", json={"project": "43.1", "schema": FINANCE_XML}).json
    assert out["untrained_controls"] == ["tone"] and "planning" not in out
    assert PlanStore(settings.model_dir).get("project-43__tone") is None


def run_cli(*args, env):
    return subprocess.run([CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def test_cli_plan_builds_the_planned_ensemble_and_it_serves(tmp_path, good_checkpoint):
    hf_home = hf_cache_with(good_checkpoint, tmp_path / "hf", "acme/minilm-sentiment")
    catalog = catalog_file(tmp_path / "catalog.json", [
        local_entry("acme/minilm-sentiment", "", ["NEG", "NEU", "POS"]),
        local_entry("acme/finance-not-downloaded", "", ["negative", "neutral", "positive"], params_m=5,
                    domain="financial news")])
    config = tmp_path / "finance.xml"
    config.write_text(FINANCE_XML)
    sample = tmp_path / "sample.csv"
    with sample.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows((t, FINANCE[y]) for t, y in sentiment_rows(90, seed=21))
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home),
           "CATALOG_FILE": str(catalog), "ENCODER_DTYPE": "float32"}
    env.pop("HF_HUB_CACHE", None)

    dry = run_cli("plan", "--label-config", str(config), "--sample", str(sample), "--no-llm", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "NEG → Bearish, NEU → Neutral, POS → Bullish" in dry.stdout and "(dry run: not written)" in dry.stdout
    assert "acme/finance-not-downloaded" in dry.stdout and "huggingface-cli download" in dry.stdout

    out = run_cli("plan", "--label-config", str(config), "--sample", str(sample), "--project", "5", "--no-llm",
                  "--build", "--json", env=env)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout.splitlines()[-1])
    assert plan["key"] == "project-5__tone" and plan["written"].endswith("plans/project-5__tone.json")
    assert [(s["name"], s["family"]) for s in plan["specialists"]] == [
        ("minilm-sentiment", "hf"), ("tfidf-lr", "tfidf"), ("minilm-lr", "encoder"), ("tfidf-nb", "tfidf")]
    assert plan["specialists"][0]["params"]["checkpoint"] == "acme/minilm-sentiment"  # from the HF cache
    assert plan["checked"]["results"]["minilm-sentiment"]["accuracy"] > 0.9  # on the sample's 90 annotations
    missing = {d["name"]: d["reason"] for d in plan["dropped"]}  # the seed's hub checkpoints are not cached either
    assert "not available offline" in missing["acme/finance-not-downloaded"]
    assert "acme/minilm-sentiment" not in missing
    assert plan["applied"]["trained_on"] == 90

    settings = Settings.from_env({}, data_dir=tmp_path / "data", bundle_refresh_seconds=0.0,
                                 encoder_dtype="float32", plan_on_setup="off")
    _, client = app_for(settings)
    setup = client.post("/setup", json={"project": "5.1", "schema": FINANCE_XML}).json
    assert setup["model_version"] == plan["applied"]["bundle"]
    results = predict(client, "5.1")
    assert [r["result"][0]["value"]["choices"] for r in results] == [["Bullish"], ["Bearish"], ["Neutral"]]
    votes = client.get("/tasks/2/provenance?project=5").json["records"][0]["votes"]
    assert len(votes) == 4  # the planned ensemble: the checkpoint and the three offline specialists
