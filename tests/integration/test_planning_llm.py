"""Planning with an LLM (issue #6): real HTTP to the scripted OpenAI-compatible server on 127.0.0.1, real
availability checks of a real local checkpoint; hub checkpoints are not in the (empty) cache, HF_HUB_OFFLINE=1."""

from __future__ import annotations

import json

import pytest

from backend.labelstudio.config import parse_label_config
from backend.llm.client import forget_endpoint_capabilities
from backend.planning.catalog import load_catalog
from backend.planning.planner import make_plan
from backend.settings import Settings
from tests.llm_server import FakeLLM, answer, serving
from tests.planning_helpers import FINANCE_XML, catalog_file, local_entry

CONTROL = parse_label_config(FINANCE_XML).controls[0]
SAMPLES = ["Shares of the company rallied after strong earnings", "The stock fell sharply on weak guidance"]
LOCAL = "local/minilm-sentiment"


@pytest.fixture()
def catalog(tmp_path, minilm_classifier_dir):
    return load_catalog(catalog_file(tmp_path / "catalog.json",
                                     [local_entry(LOCAL, minilm_classifier_dir, ["NEG", "NEU", "POS"])]))


@pytest.fixture()
def fake():
    forget_endpoint_capabilities()
    with serving(FakeLLM()) as server:
        yield server
    forget_endpoint_capabilities()


def settings_for(tmp_path, base_url: str) -> Settings:
    return Settings.from_env({}, data_dir=tmp_path, openai_base_url=base_url, llm_model="planner-model",
                             llm_max_retries=0, llm_timeout_seconds=10)


def plan_answer(label_map, checkpoint=LOCAL, reason="a sentiment model; finance tone maps onto it") -> str:
    return json.dumps({"specialists": [{"checkpoint": checkpoint, "label_map": label_map, "reason": reason}],
                       "reason": "one local sentiment checkpoint fits"})


def test_a_good_llm_plan_is_accepted_with_its_mapping_and_reasons(tmp_path, fake, catalog):
    pairs = [{"checkpoint_label": "NEG", "choice": "Bearish"}, {"checkpoint_label": "NEU", "choice": "Neutral"},
             {"checkpoint_label": "POS", "choice": "Bullish"}]
    fake.default = answer(plan_answer(pairs))
    plan = make_plan(CONTROL, "project-3__tone", settings_for(tmp_path, fake.base_url), catalog, SAMPLES)
    assert plan.source == "llm" and plan.reason == "one local sentiment checkpoint fits"
    hf = plan.pretrained()
    assert [s["catalog"] for s in hf] == [LOCAL]
    assert hf[0]["params"]["label_map"] == {"NEG": "Bearish", "NEU": "Neutral", "POS": "Bullish"}
    assert hf[0]["reason"].startswith("LLM: a sentiment model")
    assert [s["name"] for s in plan.specialists] == ["minilm-sentiment", "tfidf-lr", "minilm-lr", "tfidf-nb"]
    assert plan.llm["model"] == "planner-model" and plan.llm["structured"] and plan.llm["prompt_tokens"] > 0
    # the request: structured output restricted to the offered checkpoints and the project's choices
    (request,) = fake.requests
    schema = request["response_format"]["json_schema"]["schema"]
    spec = schema["properties"]["specialists"]["items"]["properties"]
    assert spec["checkpoint"]["enum"] == [LOCAL]
    assert spec["label_map"]["items"]["properties"]["choice"]["enum"] == ["Bearish", "Bullish", "Neutral"]
    prompt = request["messages"][-1]["content"]
    assert SAMPLES[0] in prompt and '"NEG"' in prompt
    # the hub checkpoints the matcher shortlisted are not in the cache: named, with how to get them
    finbert = next(d for d in plan.dropped if d["name"] == "ProsusAI/finbert")
    assert "huggingface-cli download ProsusAI/finbert" in finbert["reason"]


@pytest.mark.parametrize(("raw", "why"), [
    ("I would pick finbert, it is the best for finance.", "malformed LLM plan: not JSON"),
    ('{"models": ["local/minilm-sentiment"]}', 'malformed LLM plan: "specialists" must be a list'),
    ('{"specialists": [{"checkpoint": "local/minilm-sentiment", "label_map": 3}], "reason": ""}', "label_map must be"),
])
def test_a_malformed_llm_plan_falls_back_to_the_matcher_with_the_reason(tmp_path, fake, catalog, raw, why):
    fake.default = answer(raw)
    plan = make_plan(CONTROL, "project-3__tone", settings_for(tmp_path, fake.base_url), catalog, SAMPLES)
    assert plan.source == "matcher"
    assert any(why in n and "the matcher's plan is used" in n for n in plan.notes), plan.notes
    assert plan.llm["raw"] == raw  # the answer is kept for whoever reads the plan
    # the matcher maps the same checkpoint by synonyms
    (hf,) = plan.pretrained()
    assert hf["params"]["label_map"] == {"NEG": "Bearish", "NEU": "Neutral", "POS": "Bullish"}
    assert hf["reason"].startswith("matcher rank 1")


def test_a_plan_mapping_onto_a_label_the_project_does_not_have_is_rejected(tmp_path, fake, catalog):
    fake.default = answer(plan_answer({"NEG": "Bearish", "NEU": "Sideways", "POS": "Bullish"}))
    plan = make_plan(CONTROL, "project-3__tone", settings_for(tmp_path, fake.base_url), catalog, SAMPLES)
    assert plan.source == "matcher"
    assert any("maps 'NEU' onto 'Sideways', which is not a choice of the project" in n for n in plan.notes)
    assert all("Sideways" not in s["params"].get("label_map", {}).values() for s in plan.specialists)


def test_a_plan_from_labels_the_checkpoint_does_not_have_or_an_unoffered_checkpoint_is_rejected(tmp_path, fake,
                                                                                                 catalog):
    fake.default = answer(plan_answer({"negative": "Bearish", "neutral": "Neutral", "positive": "Bullish"}))
    plan = make_plan(CONTROL, "k", settings_for(tmp_path, fake.base_url), catalog, SAMPLES)
    assert plan.source == "matcher" and any("has no label 'negative'" in n for n in plan.notes)
    fake.default = answer(plan_answer({"positive": "Bullish"}, checkpoint="ProsusAI/finbert"))
    plan = make_plan(CONTROL, "k", settings_for(tmp_path, fake.base_url), catalog, SAMPLES)
    assert plan.source == "matcher" and any("not one of the candidates offered" in n for n in plan.notes)


def test_an_llm_mapping_that_leaves_a_choice_uncovered_drops_that_checkpoint(tmp_path, fake, catalog):
    fake.default = answer(plan_answer({"NEG": "Bearish", "POS": "Bullish"}))
    plan = make_plan(CONTROL, "k", settings_for(tmp_path, fake.base_url), catalog, SAMPLES)
    assert plan.source == "llm" and plan.pretrained() == []
    dropped = next(d for d in plan.dropped if d["name"] == LOCAL)
    assert "leaves ['Neutral'] uncovered" in dropped["reason"]
    assert [s["family"] for s in plan.specialists] == ["tfidf", "encoder", "tfidf"]


def test_an_endpoint_without_json_schema_gets_the_plain_prompt(tmp_path, catalog):
    forget_endpoint_capabilities()
    with serving(FakeLLM(reject_response_format=True)) as fake:
        fake.default = answer("```json\n" + plan_answer({"NEG": "Bearish", "NEU": "Neutral", "POS": "Bullish"})
                              + "\n```")
        plan = make_plan(CONTROL, "k", settings_for(tmp_path, fake.base_url), catalog, SAMPLES)
        assert [bool(r.get("response_format")) for r in fake.requests] == [True, False]
    forget_endpoint_capabilities()
    assert plan.source == "llm" and plan.llm["structured"] is False
    assert plan.pretrained()[0]["params"]["label_map"] == {"NEG": "Bearish", "NEU": "Neutral", "POS": "Bullish"}


def test_an_unreachable_llm_falls_back_to_the_matcher(tmp_path, catalog):
    plan = make_plan(CONTROL, "k", settings_for(tmp_path, "http://127.0.0.1:9/v1"), catalog, SAMPLES)
    assert plan.source == "matcher" and [s["catalog"] for s in plan.pretrained()] == [LOCAL]
    assert any(n.startswith("LLM gave no plan (connection error") for n in plan.notes)


def test_without_an_llm_the_matcher_plans_and_the_hub_checkpoints_are_named(tmp_path, catalog):
    settings = Settings.from_env({}, data_dir=tmp_path)
    plan = make_plan(CONTROL, "k", settings, catalog, SAMPLES)
    assert plan.source == "matcher" and plan.llm == {} and plan.language == "en"
    assert [s["catalog"] for s in plan.pretrained()] == [LOCAL]
    named = {d["name"] for d in plan.dropped}
    assert {"ProsusAI/finbert", "mrm8488/distilroberta-finetuned-financial-news-sentiment-analysis"} <= named
    assert all("HF_HUB_OFFLINE is set" in d["reason"] for d in plan.dropped)
