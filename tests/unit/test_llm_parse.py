"""The strict answer parser and the prompt: exact choices or an explicit abstention, nothing coerced."""

from __future__ import annotations

import pytest

from backend.llm import build_messages, parse_answer, response_schema
from backend.llm.prompt import abstain_token

CHOICES = ("Positive", "Negative", "Neutral")


@pytest.mark.parametrize("raw", [
    "Positive", "  Positive\n", '"Positive"', "'Positive'", "`Positive`", '{"label": "Positive"}',
    ' {"label":"Positive"} ', '```json\n{"label": "Positive"}\n```', "```\nPositive\n```", '"\\"Positive\\""',
    '{"label": " Positive "}',
])
def test_packaging_is_removed_and_the_label_must_match_exactly(raw):
    assert parse_answer(raw, CHOICES).verdict == "Positive"


@pytest.mark.parametrize("raw", [
    "positive", "POSITIVE", "Positive.", "Positive!", "Pos", "The answer is Positive", "Positive, Negative",
    '{"label": "positive"}', '{"label": ["Positive"]}', '{"answer": "Positive"}', '{"label": "Positive"',
    '["Positive"]', "Mixed", "", "   ", None, "Positive\nNegative", "```Positive```x",
])
def test_anything_else_is_invalid(raw):
    parsed = parse_answer(raw, CHOICES)
    assert parsed.status == "invalid" and parsed.verdict is None and parsed.detail


@pytest.mark.parametrize("raw", ["abstain", '{"label": "abstain"}', '"abstain"'])
def test_explicit_abstention(raw):
    assert parse_answer(raw, CHOICES).status == "abstain"


def test_abstain_must_be_exact_too():
    assert parse_answer("Abstain", CHOICES).status == "invalid"


def test_a_choice_named_abstain_stays_a_choice():
    choices = ("abstain", "vote")
    token = abstain_token(choices)
    assert token not in choices
    assert parse_answer("abstain", choices).verdict == "abstain"
    assert parse_answer(token, choices).status == "abstain"
    assert response_schema(choices)["json_schema"]["schema"]["properties"]["label"]["enum"] == ["abstain", "vote",
                                                                                                token]


def test_schema_is_strict():
    fmt = response_schema(CHOICES)
    assert fmt["type"] == "json_schema"
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["label"] and schema["additionalProperties"] is False


def test_plain_prompt_lists_the_choices_exactly():
    messages = build_messages("so so", CHOICES, structured=False)
    system = messages[0]["content"]
    assert all(f'"{c}"' in system for c in CHOICES) and "abstain" in system and "JSON" not in system
    assert messages[-1] == {"role": "user", "content": "Text: so so"}
