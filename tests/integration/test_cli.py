"""The console command, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

CLI = str(Path(sys.executable).parent / "autoannotator")


def run(*args, env):
    return subprocess.run([CLI, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_train_then_predict(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    data = tmp_path / "train.jsonl"
    rows = [{"review": f"great product {i}", "stars": "good"} for i in range(30)]
    rows += [{"review": f"broken again {i}", "stars": "bad"} for i in range(30)]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    config = tmp_path / "config.xml"
    config.write_text('<View><Text name="r" value="$review"/><Choices name="q" toName="r">'
                      '<Choice value="Good"/><Choice value="Bad"/></Choices></View>')
    specs = json.dumps([{"name": "t", "family": "tfidf", "params": {}}])
    out = run("train", "--label-config", str(config), "--data", str(data), "--text-col", "review",
              "--label-col", "stars", "--specialists", specs, env=env)
    assert out.returncode == 0, out.stderr
    trained = json.loads(out.stdout)
    assert trained["promoted"] and trained["model_version"].startswith("aa-")
    pred = run("predict", "--label-config", str(config), "--text", "great product", "--text", "broken again", env=env)
    assert pred.returncode == 0, pred.stderr
    lines = [json.loads(x) for x in pred.stdout.splitlines()]
    assert [x["prediction"]["result"][0]["value"]["choices"] for x in lines] == [["Good"], ["Bad"]]
    assert all(x["prediction"]["model_version"] == trained["model_version"] for x in lines)
    listed = run("bundles", env=env)
    assert trained["model_version"] in listed.stdout


def test_train_reports_labels_that_are_not_choices(tmp_path):
    env = {**os.environ, "DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,Positive\nb,Sarcastic\n")
    out = run("train", "--label-config", str(ROOT / "samples" / "sentiment.xml"), "--data", str(data), env=env)
    assert out.returncode != 0 and "Sarcastic" in out.stderr


def test_jobs_pushes_lists_each_run_of_pushed_predictions(tmp_path):
    from backend.push import PushJobs, PushKind
    from backend.settings import Settings
    from backend.store import Store

    env = {**os.environ, "DATA_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    settings = Settings.from_env(env)
    PushJobs(Store(settings.database_url), settings).write("3", 3, "v9", [{"id": i, "data": {"text": "x"}}
                                                                         for i in range(1, 8)], 5, PushKind.RETRIEVE)
    out = run("jobs", "--pushes", "--project", "3", env=env)
    assert out.returncode == 0, out.stderr
    (line,) = [json.loads(x) for x in out.stdout.splitlines()]
    assert (line["kind"], line["model_version"], line["tasks"], line["chunks"], line["state"]) == \
        ("retrieve", "v9", 7, {"pending": 2}, "running")
