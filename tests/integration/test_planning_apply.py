"""A plan at work (issue #6), with real checkpoints built from the shipped MiniLM: the accuracy check on human
annotations, unavailable checkpoints, fine-tuning from a mapped head, and the training stage's recipe."""

from __future__ import annotations

import numpy as np
import pytest

from backend.labelstudio.config import parse_label_config
from backend.planning import availability
from backend.planning.apply import build_zero_shot, check_on_annotations
from backend.planning.catalog import load_catalog
from backend.planning.plan import PlanStore
from backend.planning.planner import make_plan
from backend.serving.bundles import BundleStore
from backend.settings import Settings
from backend.specialists import registry
from tests.planning_helpers import (
    FINANCE,
    FINANCE_XML,
    catalog_file,
    local_entry,
    save_checkpoint,
    sentiment_rows,
)

ID2LABEL = {0: "NEG", 1: "NEU", 2: "POS"}
CONTROL = parse_label_config(FINANCE_XML).controls[0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-ckpts")
    return {"good": save_checkpoint(root / "good", ID2LABEL, "trained"),
            "constant": save_checkpoint(root / "constant", ID2LABEL, "constant:2")}  # always POS


def finance_rows(n, seed=0, skew=None):
    return [(t, FINANCE[y]) for t, y in sentiment_rows(n, seed, skew=skew)]


def two_checkpoint_plan(tmp_path, checkpoints):
    catalog = load_catalog(catalog_file(tmp_path / "c.json", [
        local_entry("local/good", checkpoints["good"], ["NEG", "NEU", "POS"]),
        local_entry("local/constant", checkpoints["constant"], ["NEG", "NEU", "POS"], params_m=10)]))
    settings = Settings.from_env({}, data_dir=tmp_path)
    plan = make_plan(CONTROL, "project-9__tone", settings, catalog, use_llm=False)
    assert [s["catalog"] for s in plan.pretrained()] == ["local/constant", "local/good"]  # smaller first
    return plan, catalog, settings


def test_a_specialist_no_better_than_chance_on_human_annotations_is_dropped(tmp_path, checkpoints):
    plan, catalog, _ = two_checkpoint_plan(tmp_path, checkpoints)
    rows = finance_rows(40, seed=5, skew="Neutral")  # Neutral is the majority: chance is at least 0.5
    few = rows[:10]
    check_on_annotations(plan, [t for t, _ in few], [[y] for _, y in few], 20, catalog, dtype="float32")
    assert plan.checked == {} and len(plan.pretrained()) == 2  # 10 annotations: too few to judge
    check_on_annotations(plan, [t for t, _ in rows], [[y] for _, y in rows], 20, catalog, dtype="float32")
    assert [s["catalog"] for s in plan.pretrained()] == ["local/good"]
    (dropped,) = [d for d in plan.dropped if d["name"] == "constant"]
    assert "no better than chance" in dropped["reason"] and "on 40 human annotations" in dropped["reason"]
    results = plan.checked["results"]
    assert results["good"]["accuracy"] > 0.9 and results["constant"]["accuracy"] < 0.5
    assert plan.checked["annotations"] == 40


def test_an_unavailable_checkpoint_is_named_and_the_plan_uses_what_is_available(tmp_path, checkpoints):
    # The team's catalog ranks a hub checkpoint first (it is smaller), but it is not in the cache, offline.
    catalog = load_catalog(catalog_file(tmp_path / "c.json", [
        local_entry("acme/finance-not-downloaded", "", ["negative", "neutral", "positive"], params_m=5, paper=True,
                    domain="financial news"),
        local_entry("local/good", checkpoints["good"], ["NEG", "NEU", "POS"])]))
    plan = make_plan(CONTROL, "k", Settings.from_env({}, data_dir=tmp_path), catalog, use_llm=False)
    assert [s["catalog"] for s in plan.pretrained()] == ["local/good"]
    (missing,) = [d for d in plan.dropped if d["name"] == "acme/finance-not-downloaded"]
    assert "'acme/finance-not-downloaded' is not available offline" in missing["reason"]
    assert "huggingface-cli download acme/finance-not-downloaded" in missing["reason"]
    assert "HF_HOME" in missing["reason"] and "save_pretrained" in missing["reason"]
    # a directory that is not a checkpoint is named too
    found = availability.check(str(tmp_path))
    assert not found.available and str(tmp_path) in found.message
    good = availability.check(str(checkpoints["good"]))
    assert good.available and good.labels == ("NEG", "NEU", "POS")


def test_the_zero_shot_bundle_drops_a_checkpoint_that_fails_to_load(tmp_path, checkpoints):
    plan, _, settings = two_checkpoint_plan(tmp_path, checkpoints)
    plan.pretrained()[0]["params"]["checkpoint"] = str(tmp_path / "deleted-since")
    ref = build_zero_shot(plan, BundleStore(settings.model_dir), dtype="float32")
    manifest = BundleStore(settings.model_dir).manifest(ref)
    assert [e.name for e in manifest.specialists] == ["good"] and manifest.metrics == {"zero_shot": True}
    (dropped,) = [d for d in plan.dropped if d["name"] == "constant"]
    assert dropped["reason"].startswith("could not be loaded") and "deleted-since" in dropped["reason"]
    assert plan.applied["bundle"] == ref.version and plan.applied["zero_shot"] == ["good"]


def test_fine_tuning_a_mapped_checkpoint_starts_from_its_zero_shot_head(checkpoints):
    params = {"checkpoint": str(checkpoints["good"]), "label_map": {"NEG": "Bearish", "NEU": "Neutral",
                                                                    "POS": "Bullish"}, "epochs": 0}
    sp = registry.create("hf", "h", ["Bearish", "Bullish", "Neutral"], False, params, dtype="float32")
    texts = [t for t, _ in finance_rows(12, seed=3)]
    before = sp.predict_proba(texts)
    sp.fit(texts, np.zeros(len(texts), dtype=int))  # no epoch: only the new head is installed
    assert sp.model.config.id2label == {0: "Bearish", 1: "Bullish", 2: "Neutral"}
    np.testing.assert_allclose(sp.predict_proba(texts), before, atol=1e-5)


def test_a_training_stage_uses_the_plan_and_its_check(tmp_path, checkpoints):
    from finetune.trainer import planned_recipe

    plan, _, settings = two_checkpoint_plan(tmp_path, checkpoints)
    settings = settings.with_(encoder_dtype="float32")
    PlanStore(settings.model_dir).save(plan)
    rows = [{"text": t, "choices": [y]} for t, y in finance_rows(30, seed=8, skew="Neutral")]
    served = [{"name": "tfidf-lr", "family": "tfidf", "params": {"classifier": "lr"}, "weight": 1.0}]
    recipe, notes = planned_recipe("9", CONTROL, served, True, rows, settings)
    assert [s["name"] for s in recipe] == ["tfidf-lr", "good", "minilm-lr", "tfidf-nb"]
    assert notes == ["tone: plan checked on 30 human annotations, dropped ['constant']"]
    good = recipe[1]["params"]
    assert good["mode"] == "head" and good["label_map"]["NEG"] == "Bearish"  # a planned checkpoint: head only
    saved = PlanStore(settings.model_dir).get("project-9__tone")
    assert saved.checked and {d["name"] for d in saved.dropped} >= {"constant"}
    # checked once: a later stage does not measure again
    again, notes = planned_recipe("9", CONTROL, served, True, rows, settings)
    assert notes == [] and [s["name"] for s in again] == [s["name"] for s in recipe]
    # a project without a plan keeps its recipe
    assert planned_recipe("10", CONTROL, served, True, rows, settings) == (served, [])
