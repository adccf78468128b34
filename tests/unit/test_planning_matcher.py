"""The deterministic matcher and the plan's pure rules (issue #6): no models, no network."""

from __future__ import annotations

import pytest

from backend.planning.catalog import seed_catalog
from backend.planning.matcher import default_specialists, detect_language, judge, project_task, rank
from backend.planning.plan import Plan, merge_recipe
from backend.planning.validate import (
    PlanRejected,
    chance_accuracy,
    check_plan,
    no_better_than_chance,
    parse_llm_plan,
    read_proposals,
)

CATALOG = seed_catalog()


def usable(choices, multiple=False, language=None, hints=()):
    return [c for c in rank(CATALOG, choices, multiple, language, hints) if c.usable]


def test_sentiment_choices_get_the_papers_tweet_models_first():
    best = usable(["Positive", "Negative", "Neutral"], language="en")
    assert [c.entry.id for c in best[:2]] == ["cardiffnlp/twitter-roberta-base-sentiment-latest",
                                              "finiteautomata/bertweet-base-sentiment-analysis"]
    assert best[0].label_map == {"negative": "Negative", "neutral": "Neutral", "positive": "Positive"}
    assert best[1].label_map == {"NEG": "Negative", "NEU": "Neutral", "POS": "Positive"}
    ids = {c.entry.id for c in best}
    assert "distilbert-base-uncased-finetuned-sst-2-english" not in ids  # no neutral class: cannot cover
    stars = next(c for c in best if c.entry.id.startswith("nlptown/"))
    assert stars.label_map == {"1 star": "Negative", "2 stars": "Negative", "3 stars": "Neutral",
                               "4 stars": "Positive", "5 stars": "Positive"}
    opaque = next(c for c in best if c.entry.id == "cardiffnlp/twitter-roberta-base-sentiment")
    assert opaque.label_map == {"LABEL_0": "Negative", "LABEL_1": "Neutral", "LABEL_2": "Positive"}


def test_finance_choices_map_negative_to_bearish_and_prefer_finance_models():
    best = usable(["Bearish", "Bullish", "Neutral"], language="en")
    assert {c.entry.id for c in best[:2]} == {"ProsusAI/finbert",
                                              "mrm8488/distilroberta-finetuned-financial-news-sentiment-analysis"}
    finbert = next(c for c in best if c.entry.id == "ProsusAI/finbert")
    assert finbert.label_map == {"positive": "Bullish", "negative": "Bearish", "neutral": "Neutral"}
    assert "financ" in finbert.reason().lower()


def test_toxicity_choices_use_label_meanings():
    best = usable(["Toxic", "Non-toxic"], language="en")
    ids = [c.entry.id for c in best]
    assert {"s-nlp/roberta_toxicity_classifier", "JungleLee/bert-toxic-comment-classification",
            "garak-llm/toxic-comment-model"} <= set(ids)
    snlp = next(c for c in best if c.entry.id == "s-nlp/roberta_toxicity_classifier")
    assert snlp.label_map == {"neutral": "Non-toxic", "toxic": "Toxic"}  # its "neutral" means non-toxic
    assert all(c.entry.task == "toxicity" for c in best)
    # toxic-bert has no clean label and a multi-label head: it cannot serve a single-choice Toxic/Clean control
    toxic_bert = judge(CATALOG.get("unitary/toxic-bert"), ["Toxic", "Clean"], False)
    assert not toxic_bert.usable and toxic_bert.missing == ("Clean",) and toxic_bert.problems


def test_choices_no_checkpoint_covers_fall_back_to_the_trainable_defaults():
    assert usable(["Sports", "Politics", "Tech"]) == []
    assert usable(["Sports", "Politics", "Tech"], multiple=True) == []  # tweet-topic knows sports only
    defaults = default_specialists(CATALOG)
    assert [d["name"] for d in defaults] == ["tfidf-lr", "minilm-lr", "tfidf-nb"]
    assert all("learns every choice" in d["reason"] for d in defaults)


def test_language_and_task_detection():
    assert detect_language(["I really love this and it is great", "the service was not good for my family"]) == "en"
    assert detect_language(["Das ist nicht gut und ich bin sehr traurig", "Der Film ist auch sehr schön"]) == "de"
    assert detect_language(["ok"]) is None
    assert project_task(["Bearish", "Bullish", "Neutral"]) == "sentiment"
    assert project_task(["Toxic", "Clean"]) == "toxicity"
    assert project_task(["Billing", "Bug"]) is None
    german = usable(["Positive", "Negative", "Neutral"], language="de")
    assert german and all("de" in c.entry.languages or "multi" in c.entry.languages for c in german)


def test_llm_answers_are_read_strictly():
    candidates = {"a/sent": ["NEG", "NEU", "POS"]}
    choices = ["Bearish", "Bullish", "Neutral"]
    good = parse_llm_plan('```json\n{"specialists": [{"checkpoint": "a/sent", "label_map": {"NEG": "Bearish", '
                          '"POS": "Bullish", "NEU": "Neutral"}, "reason": "finance"}], "reason": "ok"}\n```')
    (p,) = read_proposals(good, candidates, choices)
    assert p.label_map == {"NEG": "Bearish", "POS": "Bullish", "NEU": "Neutral"} and p.reason == "finance"
    pairs = {"specialists": [{"checkpoint": "a/sent", "label_map": [{"checkpoint_label": "NEG", "choice": "Bearish"}],
                              "reason": ""}], "reason": ""}
    assert read_proposals(pairs, candidates, choices)[0].label_map == {"NEG": "Bearish"}
    bad = [
        ("use finbert", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"models": []}', '"specialists" must be a list'),
        ('{"specialists": [{"checkpoint": "b/other", "label_map": {}}]}', "not one of the candidates"),
        ('{"specialists": [{"checkpoint": "a/sent", "label_map": {"NEG": "Bearish-ish"}}]}', "not a choice"),
        ('{"specialists": [{"checkpoint": "a/sent", "label_map": {"negative": "Bearish"}}]}', "has no label"),
        ('{"specialists": [{"checkpoint": "a/sent", "label_map": "NEG=Bearish"}]}', "label_map must be"),
    ]
    for raw, message in bad:
        with pytest.raises(PlanRejected, match=message):
            read_proposals(parse_llm_plan(raw), candidates, choices)


def test_plan_checks_and_the_chance_rule():
    spec = {"name": "s", "family": "hf", "params": {"checkpoint": "x", "label_map": {"NEG": "Bearish"}}}
    plan = Plan("k", "tone", ["Bearish", "Bullish"], False, [spec])
    assert any("covers no ['Bullish']" in p for p in check_plan(plan))
    spec["params"]["label_map"] = {"NEG": "Bearish", "POS": "Moon"}
    assert any("not choices" in p for p in check_plan(plan))
    assert check_plan(Plan("k", "tone", ["A", "B"], False, [])) == ["the plan has no specialist"]
    # chance: the better of 1/k and the majority share; small samples are not judged
    gold = [0] * 12 + [1] * 5 + [2] * 3
    assert chance_accuracy(gold, 3) == 0.6
    assert no_better_than_chance(12, gold, 3, min_annotations=20) is not None  # 0.60 is chance
    assert no_better_than_chance(13, gold, 3, min_annotations=20) is None
    assert no_better_than_chance(0, gold[:10], 3, min_annotations=20) is None  # too few to judge
    assert chance_accuracy([(0,), (0, 1), (0,)], 2) == pytest.approx(2 / 3)  # multiple choice: label sets


def test_a_training_stage_merges_the_plan_into_what_is_served():
    planned = [{"name": "finbert", "family": "hf", "params": {"checkpoint": "ProsusAI/finbert"}, "weight": 1.0},
               {"name": "tfidf-lr", "family": "tfidf", "params": {"classifier": "lr"}, "weight": 1.0}]
    plan = Plan("k", "tone", ["Bearish", "Bullish"], False, planned,
                dropped=[{"name": "bad-model", "checkpoint": "x", "reason": "chance"}])
    assert merge_recipe(None, plan) == plan.recipe()
    served = [{"name": "finbert", "family": "hf", "params": {"checkpoint": "/served/finbert"}, "weight": 1.0},
              {"name": "bad-model", "family": "hf", "params": {"checkpoint": "/served/bad"}, "weight": 1.0}]
    merged = merge_recipe(served, plan)
    assert [(s["name"], s["params"]["checkpoint"] if s["family"] == "hf" else None) for s in merged] == \
        [("finbert", "/served/finbert"), ("tfidf-lr", None)]
