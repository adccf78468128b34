"""Shared fixtures: real bundles trained once per session on the shipped sample, real checkpoints."""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"  # everything the tests read; see its README for sources and licences
DATA = FIXTURES / "data"
SENTIMENT = DATA / "sentiment-semeval2013-balanced.csv"  # 2,400 tweets, 800 of each class
CAPTURED = json.loads((FIXTURES / "label-studio" / "captured-requests.json").read_text())
SENTIMENT_XML = (ROOT / "samples" / "sentiment.xml").read_text()

TOPICS = {
    "Sports": ["match", "goal", "team", "league", "coach", "score", "tennis", "football"],
    "Politics": ["election", "senate", "vote", "minister", "policy", "parliament", "campaign"],
    "Tech": ["phone", "software", "laptop", "app", "chip", "startup", "ai"],
}


def captured(name: str) -> dict:
    return json.loads(json.dumps(CAPTURED[name]["body"]))


def forked_exit_code(child: int, timeout: float = 60.0) -> int | None:
    """The exit code of a forked child, or None when it hung past `timeout` (it is killed then)."""
    deadline = time.time() + timeout
    while (done := os.waitpid(child, os.WNOHANG))[0] == 0 and time.time() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(child, 9)
        os.waitpid(child, 0)
        return None
    return os.waitstatus_to_exitcode(done[1])


def topic_rows(n: int = 300, seed: int = 0) -> list[dict]:
    """Synthetic multi-label rows: each text mentions words of one or two topics."""
    rng = random.Random(seed)
    names = list(TOPICS)
    rows = []
    for _ in range(n):
        chosen = rng.sample(names, rng.choice([1, 1, 2]))
        words = [w for t in chosen for w in rng.sample(TOPICS[t], 3)] + rng.sample(["the", "new", "today", "big"], 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": chosen})
    return rows


@contextmanager
def _throwaway_postgres() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    name = f"aa_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh database of each supported kind: a SQLite file, or a throw-away PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/test.db"
        return
    with _throwaway_postgres() as url:
        yield url


@pytest.fixture()
def postgres_url():
    """A throw-away PostgreSQL database, for what only PostgreSQL has (several processes, dropped connections)."""
    with _throwaway_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def session_settings(tmp_path_factory):
    from backend.settings import Settings

    data_dir = tmp_path_factory.mktemp("aa-data")
    return Settings.from_env({}, data_dir=data_dir, bundle_refresh_seconds=0.0)


@pytest.fixture(scope="session")
def default_bundle(session_settings):
    """The README's bootstrap path: the default 3-specialist sentiment bundle from the shipped sample."""
    from finetune.bootstrap import ensure_default_bundle

    return ensure_default_bundle(session_settings)


@pytest.fixture(scope="session")
def topics_bundle(session_settings, tmp_path_factory):
    from backend.datasets import load_labelled
    from backend.serving.bundles import BundleStore
    from finetune.training import train_bundle

    path = tmp_path_factory.mktemp("topics") / "topics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in topic_rows()))
    data = load_labelled(path, multiple=True)
    ref, _ = train_bundle(BundleStore(session_settings.model_dir), ["Sports", "Politics", "Tech"], True, data,
                          [{"name": "tfidf-lr", "family": "tfidf", "params": {}}], **session_settings.runtime)
    return ref


@pytest.fixture(scope="session")
def app_model(session_settings, default_bundle):
    from model import AutoAnnotatorModel

    return AutoAnnotatorModel(session_settings)


@pytest.fixture()
def client(session_settings, app_model):
    from backend.http.app import create_app

    return create_app(session_settings, app_model).test_client()


@pytest.fixture(scope="session")
def minilm_classifier_dir(tmp_path_factory):
    """A real sequence-classification checkpoint: MiniLM body + fresh 3-way head, via save_pretrained."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from backend.specialists.torch_runtime import shipped_minilm_path

    src = shipped_minilm_path()
    out = tmp_path_factory.mktemp("ckpt") / "minilm-cls"
    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=3, id2label={0: "NEG", 1: "NEU", 2: "POS"}, label2id={"NEG": 0, "NEU": 1, "POS": 2})
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out
