"""The reviewer against a real OpenAI-compatible HTTP server on 127.0.0.1 with scripted behaviours.

Every case must end in the right status and route, keep the raw answer, and count the tokens the server reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from backend.llm import PROMPT_VERSION, Reviewer, ReviewItem, forget_endpoint_capabilities
from tests.llm_server import FakeLLM, answer, error, serving

CHOICES = ("Positive", "Negative", "Neutral")


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    forget_endpoint_capabilities()  # a reused port must not inherit another test server's capabilities
    with serving(FakeLLM()) as server:
        yield server


@pytest.fixture
def make_reviewer(fake: FakeLLM):
    made: list[Reviewer] = []

    def make(server: FakeLLM | None = None, **overrides: Any) -> Reviewer:
        config = {"openai_base_url": (server or fake).base_url, "openai_api_key": "test", "llm_model": "fake-model",
                  "llm_timeout_seconds": 2.0, "llm_backoff_seconds": 0.01, "llm_max_retries": 2, **overrides}
        reviewer = Reviewer(config)
        made.append(reviewer)
        return reviewer

    yield make
    for r in made:
        r.close()


def item(text: str, **kw: Any) -> ReviewItem:
    return ReviewItem(text=text, choices=CHOICES, **kw)


def test_valid_structured_answer(fake, make_reviewer):
    fake.script["great day"] = [answer('{"label": "Positive"}')]
    reviewer = make_reviewer()
    [r] = reviewer.review([item("great day")], project_id=7)
    assert (r.status, r.verdict, r.raw, r.attempts, r.structured) == ("valid", "Positive", '{"label": "Positive"}', 1,
                                                                       True)
    assert r.route().name == "llm"
    assert r.prompt_tokens > 0 and r.completion_tokens > 0
    assert (r.model, r.prompt_version, r.error) == ("fake-model", PROMPT_VERSION, "")
    sent = fake.requests[0]
    assert sent["model"] == "fake-model" and sent["temperature"] == 0.0
    schema = sent["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == [*CHOICES, "abstain"]
    t = reviewer.totals(7)
    assert (t.calls, t.prompt_tokens, t.completion_tokens) == (1, r.prompt_tokens, r.completion_tokens)
    assert t.unpriced_models == ("fake-model",)  # no price for it: reported, cost 0


@pytest.mark.parametrize(("raw", "status"), [
    ("Positive", "valid"),  # plain text is accepted too, exactly
    ('  "Negative"  ', "valid"),
    ("```json\n{\"label\": \"Neutral\"}\n```", "valid"),
    ("I think the sentiment is clearly good!!", "invalid"),  # garbage
    ('{"label": "Mixed"}', "invalid"),  # a label outside the set
    ("positive", "invalid"),  # lowercase variant of a valid label: not coerced
    ('{"label": "positive"}', "invalid"),
    ("Positive.", "invalid"),
    ('{"label": "abstain"}', "abstain"),
    ("abstain", "abstain"),
    ("", "invalid"),
])
def test_answers_end_in_the_right_status_with_the_raw_answer_kept(fake, make_reviewer, raw, status):
    fake.script["t"] = [answer(raw)]
    [r] = make_reviewer().review([item("t")])
    assert r.status == status and r.raw == raw
    assert r.prompt_tokens > 0 and r.completion_tokens > 0
    if status == "valid":
        assert r.verdict in CHOICES and r.route().name == "llm"
    else:
        assert r.verdict is None and r.route().name == "human" and r.route().reason
    if status == "invalid":
        assert "not one of the choices" in r.route().reason


def test_timeout_goes_to_human(fake, make_reviewer):
    fake.script["slow"] = [answer("Positive", delay=2.0)]
    [r] = make_reviewer(llm_timeout_seconds=0.5).review([item("slow")])
    assert (r.status, r.verdict, r.attempts) == ("timeout", None, 1)  # a timeout is not retried
    assert "0.5s" in r.error and r.route().name == "human"


def test_429_then_success_is_retried(fake, make_reviewer):
    fake.script["busy"] = [error(429, "slow down", retry_after=0), answer("Negative")]
    [r] = make_reviewer().review([item("busy")])
    assert (r.status, r.verdict, r.attempts) == ("valid", "Negative", 2)
    assert fake.calls("busy") == 2 and r.prompt_tokens > 0


def test_500_always_ends_in_error_after_bounded_retries(fake, make_reviewer):
    fake.script["broken"] = [error(500, "upstream exploded")]
    reviewer = make_reviewer(llm_max_retries=3)
    [r] = reviewer.review([item("broken")])
    assert (r.status, r.verdict, r.attempts, r.raw) == ("error", None, 4, "")
    assert "HTTP 500: upstream exploded" in r.error and r.route().name == "human"
    assert fake.calls("broken") == 4
    assert reviewer.totals().calls == 4  # every HTTP request is paid for: retries count against the budget


def test_backoff_is_exponential(fake, make_reviewer):
    fake.script["broken"] = [error(503)]
    t0 = time.monotonic()
    [r] = make_reviewer(llm_backoff_seconds=0.2, llm_max_retries=2).review([item("broken")])
    assert r.attempts == 3 and time.monotonic() - t0 >= 0.2 + 0.4


@pytest.mark.parametrize("code", [401, 403, 404])
def test_other_4xx_is_not_retried(fake, make_reviewer, code):
    fake.script["nope"] = [error(code, "no")]
    [r] = make_reviewer().review([item("nope")])
    assert (r.status, r.attempts) == ("error", 1) and f"HTTP {code}" in r.error


def test_connection_error_is_retried_then_reported():
    forget_endpoint_capabilities()
    with serving(FakeLLM()) as dead:
        base_url = dead.base_url
    reviewer = Reviewer({"openai_base_url": base_url, "llm_model": "m", "llm_backoff_seconds": 0.01})
    try:
        [r] = reviewer.review([item("anyone there?")])
    finally:
        reviewer.close()
    assert (r.status, r.attempts) == ("error", 3) and "connection error" in r.error


@pytest.mark.parametrize("status", [400, 422, 500])
def test_schema_rejected_falls_back_to_plain_text_and_remembers(make_reviewer, status):
    forget_endpoint_capabilities()
    with serving(FakeLLM(reject_response_format=True, reject_status=status)) as plain:
        plain.script["one"] = [answer("Neutral")]
        plain.script["two"] = [answer("Positive")]
        reviewer = make_reviewer(plain)
        [first] = reviewer.review([item("one")])
        assert (first.status, first.verdict, first.attempts, first.structured) == ("valid", "Neutral", 2, False)
        assert "response_format" in plain.requests[0] and "response_format" not in plain.requests[1]
        [second] = reviewer.review([item("two")])
        assert (second.status, second.verdict, second.attempts, second.structured) == ("valid", "Positive", 1, False)
        assert "response_format" not in plain.requests[2]
        assert "Answer with the label only" in plain.requests[2]["messages"][0]["content"]


def test_a_400_that_is_not_about_the_schema_is_not_remembered(fake, make_reviewer):
    fake.script["bad"] = [error(400, "context too long")]
    fake.script["good"] = [answer('{"label": "Positive"}')]
    reviewer = make_reviewer()
    [bad] = reviewer.review([item("bad")])
    assert (bad.status, bad.attempts) == ("error", 2) and "context too long" in bad.error
    [good] = reviewer.review([item("good")])
    assert good.structured is True and "response_format" in fake.requests[-1]


def test_budget_exhausted_makes_no_call(fake, make_reviewer):
    for t in "abcd":
        fake.script[t] = [answer("Positive")]
    reviewer = make_reviewer(llm_budget_calls=2)
    results = reviewer.review([item(t) for t in "abcd"], project_id="p1")
    assert sorted(r.status for r in results) == ["over_budget", "over_budget", "valid", "valid"]
    assert fake.calls() == 2
    for r in results:
        if r.status == "over_budget":
            assert (r.attempts, r.raw, r.prompt_tokens) == (0, "", 0)
            assert r.route().name == "human" and "budget" in r.route().reason
    # Another project has its own budget.
    assert reviewer.review([item("e")], project_id="p2")[0].status != "over_budget"
    assert reviewer.totals("p1").denied == 2


def test_usd_budget_and_cost_from_usage(fake, make_reviewer):
    fake.script["a"] = [answer("Positive")]
    fake.script["b"] = [answer("Negative")]
    reviewer = make_reviewer(llm_prices='{"fake-model": [1000, 2000]}', llm_budget_usd=0.001, llm_concurrency=1)
    a, b = reviewer.review([item("a"), item("b")])
    assert a.status == "valid" and a.priced
    assert a.cost_usd == pytest.approx((a.prompt_tokens * 1000 + a.completion_tokens * 2000) / 1e6)
    assert a.cost_usd >= 0.001 and b.status == "over_budget" and fake.calls() == 1
    assert reviewer.totals().usd == pytest.approx(a.cost_usd)


def test_cache_hit_makes_no_second_call(fake, make_reviewer):
    fake.script["same"] = [answer("Positive")]
    reviewer = make_reviewer()
    [first] = reviewer.review([item("same")])
    assert first.status == "valid"
    [again] = reviewer.review([item("same", examples=[("other", "Negative")])])  # examples are not in the key
    assert fake.calls() == 1
    assert (again.status, again.verdict, again.raw, again.prompt_tokens, again.attempts) == (
        "cached", "Positive", "Positive", 0, 0)
    assert again.route().name == "llm"
    # A different guideline, choices or model is another question.
    reviewer.review([item("same", guideline="Sarcasm is Negative.")])
    assert fake.calls() == 2


def test_duplicates_in_a_batch_are_asked_once(fake, make_reviewer):
    fake.script["dup"] = [answer("Negative")]
    results = make_reviewer().review([item("dup"), item("x"), item("dup")])
    assert fake.calls("dup") == 1
    assert [r.status for r in results] == ["valid", "abstain", "cached"]  # "x" gets the default reply: abstain
    assert results[2].verdict == "Negative" and results[2].prompt_tokens == 0


def test_failures_are_not_cached(fake, make_reviewer):
    fake.script["flaky"] = [answer("garbage"), answer("Positive")]
    reviewer = make_reviewer()
    assert reviewer.review([item("flaky")])[0].status == "invalid"
    assert reviewer.review([item("flaky")])[0].status == "valid"
    assert fake.calls("flaky") == 2


def test_concurrency_is_bounded_and_order_kept(fake, make_reviewer):
    labels = ["Positive", "Negative", "Neutral", "Negative", "Positive", "Neutral"]
    for i, label in enumerate(labels):
        fake.script[f"t{i}"] = [answer(label, delay=0.3 if i % 2 == 0 else 0.05)]
    results = make_reviewer(llm_concurrency=2).review([item(f"t{i}") for i in range(6)])
    assert [r.verdict for r in results] == labels
    assert fake.max_in_flight == 2  # two at a time, never more, not one after another (no wall-clock bound)


def test_batch_time_budget_sends_the_rest_to_humans(fake, make_reviewer):
    # "a" answers at once; "b" would take far past the budget, so "c" never gets a turn. The margins are wide
    # because a loaded CI machine can take a second to reach the first answer.
    fake.script["a"] = [answer("Positive", delay=0.05)]
    for t in "bc":
        fake.script[t] = [answer("Positive", delay=8.0)]
    t0 = time.monotonic()
    results = make_reviewer(llm_concurrency=1, llm_timeout_seconds=20.0).review(
        [item(t) for t in "abc"], time_budget_s=2.0)
    assert time.monotonic() - t0 < 6.0  # well before "b" would have answered
    assert results[0].status == "valid"
    assert [r.status for r in results[1:]] == ["timeout", "timeout"]
    for r in results[1:]:
        assert "time budget" in r.error and r.route().name == "human"


def test_disabled_reviewer_makes_no_call(fake):
    reviewer = Reviewer({"openai_base_url": fake.base_url, "llm_model": ""})
    try:
        [r] = reviewer.review([item("x")])
    finally:
        reviewer.close()
    assert r.status == "error" and "disabled" in r.error and fake.calls() == 0


def test_few_shot_and_guideline_are_sent(fake, make_reviewer):
    fake.script["new"] = [answer('{"label": "Negative"}')]
    make_reviewer().review([item("new", examples=[("loved it", "Positive"), ("meh", "Bogus")],
                                 guideline="Sarcasm counts as Negative.")])
    messages = fake.requests[0]["messages"]
    assert "Sarcasm counts as Negative." in messages[0]["content"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]  # the bogus example is dropped
    assert messages[2]["content"] == '{"label": "Positive"}'


def test_config_from_settings_like_objects_and_env():
    from types import SimpleNamespace

    from backend.llm import ReviewerConfig

    settings = SimpleNamespace(llm_model="gpt-4o-mini", llm_concurrency=8, host="ignored")
    cfg = ReviewerConfig.from_object(settings)
    assert (cfg.llm_model, cfg.llm_concurrency, cfg.llm_timeout_seconds, cfg.enabled) == ("gpt-4o-mini", 8, 30.0, True)
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "LLM_MODEL": "m", "LLM_BUDGET_USD": "2.5", "LLM_CONCURRENCY": ""}
    cfg = ReviewerConfig.from_env(env)
    assert (cfg.openai_base_url, cfg.llm_budget_usd, cfg.llm_concurrency) == ("http://127.0.0.1:1/v1", 2.5, 4)
    assert not ReviewerConfig().enabled
