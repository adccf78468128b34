"""The hard-sample rule and the final route after review (pure: no model, no LLM)."""

from __future__ import annotations

import pytest

from backend.decision.routing import RULES, Route, cap_review, final_route, parse_class_thresholds, route, threshold_for
from backend.decision.voting import Decision, decide

NAMES = ("Positive", "Negative", "Neutral")


def dec(label: int = 0, confidence: float = 0.9, agreement: float = 1.0, labels: tuple[int, ...] | None = None):
    return Decision(labels=(label,) if labels is None else labels, confidence=confidence,
                    probabilities=(confidence, 1 - confidence, 0.0), votes=((label,),), agreement=agreement)


def test_disagreement_is_hard_whatever_the_confidence():
    r = route(dec(confidence=0.99, agreement=2 / 3), threshold=0.0)
    assert r.name == "llm" and "disagree" in r.reason and "0.67" in r.reason


def test_threshold_zero_sends_only_disagreements():
    assert route(dec(confidence=0.01), threshold=0.0).name == "auto"
    assert route(dec(confidence=0.01, agreement=0.5), threshold=0.0).name == "llm"


def test_threshold_one_sends_everything_even_full_confidence():
    r = route(dec(confidence=1.0), threshold=1.0)
    assert r.name == "llm" and "confidence" in r.reason


def test_low_confidence_agreement_is_hard_under_the_default_rule():
    r = route(dec(confidence=0.55), threshold=0.7)
    assert r == Route("llm", "confidence 0.550 below 0.700")
    assert route(dec(confidence=0.75), threshold=0.7).name == "auto"


def test_rules():
    unsure_agree, sure_disagree, unsure_disagree = dec(confidence=0.5), dec(agreement=0.5), dec(0, 0.5, 0.5)
    assert [route(unsure_agree, 0.7, rule="disagreement").name, route(sure_disagree, 0.7, rule="disagreement").name] \
        == ["auto", "llm"]
    assert [route(unsure_agree, 0.7, rule="confidence").name, route(sure_disagree, 0.7, rule="confidence").name] \
        == ["llm", "auto"]
    both = "disagreement_and_confidence"
    assert [route(d, 0.7, rule=both).name for d in (unsure_agree, sure_disagree, unsure_disagree)] \
        == ["auto", "auto", "llm"]
    assert set(RULES) >= {"disagreement", "confidence", "disagreement_or_confidence", both}
    with pytest.raises(ValueError, match="unknown review rule"):
        route(unsure_agree, 0.7, rule="vibes")


def test_per_class_thresholds_are_keyed_by_label_name():
    per_class = {"Neutral": 0.9}
    neutral, positive = dec(label=2, confidence=0.8), dec(label=0, confidence=0.8)
    r = route(neutral, 0.5, per_class, label_names=NAMES)
    assert r.name == "llm" and "'Neutral'" in r.reason
    assert route(positive, 0.5, per_class, label_names=NAMES).name == "auto"
    # Multiple choice: the strictest threshold among the chosen labels applies.
    assert threshold_for(dec(labels=(0, 2)), 0.5, {"Positive": 0.6, "Neutral": 0.9}, NAMES) == (0.9, "'Neutral'")
    assert threshold_for(dec(labels=()), 0.5, per_class, NAMES) == (0.5, "default")


def test_parse_class_thresholds():
    assert parse_class_thresholds("") == {}
    assert parse_class_thresholds('{"Neutral": 0.8, "Positive": "0.6"}') == {"Neutral": 0.8, "Positive": 0.6}
    for bad in ('["Neutral"]', '{"Neutral": 1.5}', '{"Neutral": "x"}', "{"):
        with pytest.raises(ValueError):
            parse_class_thresholds(bad)


def test_route_on_real_votes():
    import numpy as np

    a = np.array([[0.9, 0.05, 0.05], [0.4, 0.5, 0.1]])
    b = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1]])
    d_agree, d_split = decide([a, b])
    assert route(d_agree, 0.5).name == "auto"
    assert route(d_split, 0.0).name == "llm"


@pytest.mark.parametrize(("status", "verdict", "name", "reason"), [
    ("valid", "Positive", "llm", "LLM verdict"),
    ("cached", "Positive", "llm", "LLM verdict (cached)"),
    ("cached", None, "human", "LLM abstained (cached)"),
    ("invalid", None, "human", "LLM answer is not one of the choices"),
    ("abstain", None, "human", "LLM abstained"),
    ("error", None, "human", "LLM call failed"),
    ("timeout", None, "human", "LLM review timed out"),
    ("over_budget", None, "human", "LLM budget exhausted"),
    (None, None, "human", "no LLM reviewer configured"),
    ("valid", None, "human", "LLM verdict missing"),
])
def test_final_route(status, verdict, name, reason):
    r = final_route(status, verdict)
    assert r.name == name and r.reason.startswith(reason)


def test_final_route_keeps_the_error_in_the_reason():
    assert final_route("timeout", None, "time budget") == Route("human", "LLM review timed out: time budget")
    assert final_route("mystery").name == "human"


def test_cap_review_keeps_the_least_confident_within_the_share():
    conf = [0.9, 0.3, 0.5, 0.2, 0.8, 0.4, 0.95, 0.6, 0.7, 0.1]
    hard = [1, 2, 3, 5, 9]
    kept, released = cap_review(hard, conf, n_items=10, max_share=0.3)
    assert sorted(kept) == [1, 3, 9] and sorted(released) == [2, 5]  # confidences 0.3, 0.2, 0.1 kept
    assert cap_review(hard, conf, 10, 1.0) == (hard, [])  # no cap
    assert cap_review(hard, conf, 10, 0.5) == (hard, [])  # under the cap: all kept
    assert cap_review(hard, conf, 10, 0.0) == ([], hard)
