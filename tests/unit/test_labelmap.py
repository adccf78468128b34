import pytest

from backend.specialists.labelmap import map_labels


def test_names_and_synonyms_map_onto_project_choices():
    mapping, missing = map_labels({0: "NEG", 1: "NEU", 2: "POS"}, ["Positive", "Negative", "Neutral"])
    assert mapping == {0: 1, 1: 2, 2: 0} and missing == []


def test_finance_names_map_from_sentiment_checkpoints():
    mapping, missing = map_labels(["negative", "neutral", "positive"], ["Bearish", "Bullish", "Neutral"])
    assert mapping == {0: 0, 1: 2, 2: 1} and missing == []


def test_generic_ids_need_an_override_and_missing_choices_are_reported():
    mapping, missing = map_labels({0: "LABEL_0", 1: "LABEL_1"}, ["Toxic", "Clean"])
    assert mapping == {} and missing == ["Toxic", "Clean"]
    mapping, missing = map_labels({0: "LABEL_0", 1: "LABEL_1"}, ["Toxic", "Clean"], {"LABEL_0": "Clean", "1": "Toxic"})
    assert mapping == {0: 1, 1: 0} and missing == []


def test_override_to_an_unknown_choice_is_rejected():
    with pytest.raises(ValueError, match="not a project choice"):
        map_labels(["a", "b"], ["X", "Y"], {"a": "Z"})
