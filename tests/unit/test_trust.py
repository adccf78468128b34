"""The trust ledger's rules and the stated accuracy (pure: no model, no database, no LLM)."""

from __future__ import annotations

import random

import pytest

from backend.decision.quality import GRID, exact_lower, threshold_for_target
from backend.decision.routing import Via, options
from backend.decision.trust import MIN_CHECKS, Check, Ledger, Tally, TrustState, judge, wilson

LABELS = ("pos", "neg", "neu")


def noisy_checks(p: float, n: int, skew: str = "neu", ensemble: float = 0.5, seed: int = 0) -> list[Check]:
    """Checks of an LLM right with probability p whose errors lean to `skew`, as the noisy oracle answers."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        truth = rng.choice(LABELS)
        if rng.random() < p:
            answer = truth
        else:
            wrong = [x for x in LABELS if x != truth]
            answer = skew if skew in wrong and rng.random() < 0.8 else rng.choice(wrong)
        ens = truth if rng.random() < ensemble else next(x for x in LABELS if x != truth)
        out.append(Check(answer, truth, ens))
    return out


def test_wilson_interval_is_inside_zero_one_and_narrows():
    assert wilson(0, 0) is None
    lo, hi = wilson(10, 10)
    assert 0.7 < lo < 1.0 and hi == pytest.approx(1.0)
    assert wilson(0, 10)[0] == 0.0
    wide, narrow = wilson(30, 60), wilson(300, 600)
    assert wide[0] < narrow[0] < 0.5 < narrow[1] < wide[1]


def test_states_probation_then_trusted_or_distrusted():
    assert judge("pos", Tally(5, 5, 0), Tally()).state is TrustState.PROBATION
    trusted = judge("pos", Tally(40, 38, 20), Tally())
    assert trusted.state is TrustState.TRUSTED and "lower bound" in trusted.reason
    # Right 70 % but the ensemble is right 75 % on the same items: the LLM adds nothing there.
    assert judge("pos", Tally(40, 28, 30), Tally()).state is TrustState.DISTRUSTED
    # A point estimate above the ensemble is not enough: the lower bound must beat it.
    assert judge("pos", Tally(20, 13, 12), Tally()).state is TrustState.DISTRUSTED


def test_an_answer_is_accepted_only_where_the_llm_is_trusted():
    # Right on "pos" and "neg", but errors all land on "neu": its "neu" answers are worse than the ensemble's.
    checks = ([Check("pos", "pos", "neg")] * 30 + [Check("neg", "neg", "pos")] * 30
              + [Check("neu", "pos", "pos")] * 20 + [Check("neu", "neu", "neu")] * 10)
    ledger = Ledger.from_checks(checks, LABELS)
    assert not ledger.new and ledger.n == 90
    assert ledger.accepts("pos")[0] and ledger.accepts("neg")[0]
    ok, why = ledger.accepts("neu")
    assert not ok and "distrusted" in why
    assert not ledger.accepts("sarcastic")[0]  # not a class: never a label
    assert ledger.training_weight("neu", 1.0) == 0.0
    assert 0.8 < ledger.training_weight("pos", 1.0) <= 1.0
    assert ledger.training_weight("pos", 0.5) == pytest.approx(ledger.training_weight("pos", 1.0) / 2)


def test_a_new_llm_is_audited_in_full_then_at_the_share():
    few = Ledger.from_checks(noisy_checks(0.9, MIN_CHECKS - 1), LABELS)
    assert few.new and few.audit_rate(0.05) == 1.0
    assert all(c.state is TrustState.PROBATION for c in few.classes.values()) or few.n < MIN_CHECKS
    many = Ledger.from_checks(noisy_checks(0.9, 300), LABELS)
    assert not many.new and many.audit_rate(0.05) == 0.05


@pytest.mark.parametrize("p", [0.55, 0.7, 0.85, 0.95])
def test_the_ledgers_interval_covers_the_true_accuracy(p):
    """Over many projects of 300 checks, the overall 95 % interval covers the true P about 95 % of the time."""
    covered = 0
    for seed in range(200):
        checks = noisy_checks(p, 300, seed=seed)
        right = sum(c.llm_answer == c.human_label for c in checks)
        lo, hi = wilson(right, len(checks))
        covered += lo <= p <= hi
    assert covered >= 0.92 * 200


def test_a_poor_llm_is_trusted_nowhere_and_a_good_one_where_it_earns_it():
    poor = Ledger.from_checks(noisy_checks(0.55, 400, ensemble=0.6), LABELS)
    assert not any(poor.accepts(x)[0] for x in LABELS)
    good = Ledger.from_checks(noisy_checks(0.95, 400, ensemble=0.6), LABELS)
    assert all(good.accepts(x)[0] for x in LABELS)


def test_expected_accuracy_weighs_recall_by_the_ensembles_probabilities():
    checks = [Check("pos", "pos", "x")] * 50 + [Check("pos", "neg", "x")] * 50  # finds pos, never neg
    ledger = Ledger.from_checks(checks, LABELS)
    assert ledger.expected_accuracy({"pos": 1.0}) == pytest.approx(51 / 52)
    assert ledger.expected_accuracy({"neg": 1.0}) == pytest.approx(1 / 52)
    assert ledger.expected_accuracy({"neu": 1.0}) is None  # never checked on a true "neu"


def test_router_options_by_gain_per_usd():
    trusted = Ledger.from_checks(noisy_checks(0.95, 300, ensemble=0.5), LABELS)
    probs = {"pos": 0.5, "neg": 0.3, "neu": 0.2}
    opts = options(0.5, probs, trusted, llm_cost_usd=0.0002, human_cost_usd=0.10)
    assert [o.via for o in opts] == [Via.LLM, Via.HUMAN]  # cheaper per point of accuracy
    # A confident ensemble: the LLM is not expected to beat it, only a person could add anything.
    assert [o.via for o in options(0.99, probs, trusted, 0.0002, 0.10)] == [Via.HUMAN]
    # New or distrusted everywhere: never asked for its own answer.
    new = Ledger.from_checks([], LABELS)
    assert [o.via for o in options(0.5, probs, new, 0.0002, 0.10)] == [Via.HUMAN]
    bad = Ledger.from_checks(noisy_checks(0.3, 300, ensemble=0.9), LABELS)
    assert bad.all_distrusted and [o.via for o in options(0.5, probs, bad, 0.0002, 0.10)] == [Via.HUMAN]
    assert options(0.5, probs, None, 0.0002, 0.10)[0].via is Via.HUMAN


def test_exact_lower_bound_matches_the_closed_form():
    # All right: the bound solves p^n = alpha.
    assert exact_lower(10, 10, 0.05) == pytest.approx(0.05 ** (1 / 10), abs=1e-6)
    assert exact_lower(0, 10) == 0.0 and exact_lower(0, 0) == 0.0
    assert exact_lower(90, 100) < 0.9 < exact_lower(990, 1000) + 0.02


def test_threshold_for_target_takes_the_lowest_threshold_the_evidence_supports():
    rng = random.Random(1)
    conf = [rng.random() for _ in range(3000)]
    right = [rng.random() < c for c in conf]  # calibrated
    stated = threshold_for_target(conf, right, 0.9)
    assert stated.met and stated.threshold in GRID and stated.bound >= 0.9
    assert stated.n == sum(c >= stated.threshold for c in conf)
    thin = threshold_for_target(conf[:20], right[:20], 0.95)
    assert not thin.met and thin.threshold == 1.0  # thin evidence: everything is reviewed
    with pytest.raises(ValueError):
        threshold_for_target(conf, right, 1.0)


def test_the_stated_accuracy_holds_on_unseen_tasks():
    """Derive the threshold on an audit of 400 tasks, check it on 20,000 unseen ones: it holds in >= 95 % of
    projects (it is a 95 % bound, and Bonferroni over the grid makes it conservative)."""
    held = 0
    trials = 100
    for seed in range(trials):
        rng = random.Random(seed)

        def draw(n: int, rng: random.Random = rng) -> tuple[list[float], list[bool]]:
            c = [rng.random() for _ in range(n)]
            return c, [rng.random() < x ** 0.7 for x in c]  # under-confident models

        conf, right = draw(400)
        stated = threshold_for_target(conf, right, 0.9)
        if not stated.met:
            held += 1  # nothing stated, nothing broken
            continue
        uc, ur = draw(20_000)
        kept = [ok for c, ok in zip(uc, ur, strict=True) if c >= stated.threshold]
        held += sum(kept) / len(kept) >= 0.9
    assert held >= 0.95 * trials
