"""The evaluation harness on real data (small real samples in tests/fixtures), real specialists, real training.

The figures it prints must add up: what was reviewed, accepted and left to humans covers the stream, the
oracle is always right, a simulated reviewer says so everywhere, and an LLM answer that is not exactly a
choice never becomes a label or a training row.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend.evaluation import data as eval_data
from backend.evaluation.reviewers import LLMReviewer, SimulatedReviewer, make_reviewer
from backend.evaluation.stream import Harness
from backend.settings import Settings
from tests.conftest import DATA
from tests.llm_server import FakeLLM, answer, serving

SEMEVAL = DATA / "semeval2013-train-A.tsv"
TSE = DATA / "tweet-sentiment-extraction-train.csv"
FIN = DATA / "financial-news-valid.csv"


def small(**kw) -> eval_data.EvalData:
    args = dict(source=[SEMEVAL], stream=TSE, test=None, test_split=0.3, source_test=None, text_col="text",
                label_col="sentiment", source_text_col="2", source_label_col="1", source_rows=400,
                stream_rows=240, test_rows=120, seed=1)
    args.update(kw)
    return eval_data.load(**args)


@pytest.fixture(scope="module")
def harness(tmp_path_factory) -> Harness:
    work = tmp_path_factory.mktemp("eval")
    h = Harness(small(), Settings.from_env({}), work / "work", work / "cache")
    h.cold_start()
    return h


def test_data_loading_maps_labels_splits_and_removes_leaks(tmp_path):
    d = small()
    assert d.labels == ["negative", "neutral", "positive"]
    assert len(d.stream) == 240 and len(d.test) == 120 and len(d.source) == 400
    assert not set(d.source.texts) & (set(d.stream.texts) | set(d.test.texts))
    assert not set(d.stream.texts) & set(d.test.texts)
    in_order = small(shuffle=False)  # the same items; by default in a seeded shuffled order
    assert sorted(in_order.stream.texts) == sorted(d.stream.texts) and in_order.stream.texts != d.stream.texts
    pairs = sorted(zip(d.stream.texts, d.stream.labels, strict=True))
    assert pairs == sorted(zip(in_order.stream.texts, in_order.stream.labels, strict=True))  # labels moved along
    fin = eval_data.load([SEMEVAL], FIN, None, 0.3, None, "text", "label",
                         {"negative": "Bearish", "positive": "Bullish", "neutral": "Neutral",
                          "0": "Bearish", "1": "Bullish", "2": "Neutral"}, ["Bearish", "Bullish", "Neutral"],
                         source_rows=100, stream_rows=50, source_text_col="2", source_label_col="1")
    assert set(fin.stream.labels) <= {"Bearish", "Bullish", "Neutral"} and set(fin.source.labels) == set(fin.labels)
    with pytest.raises(ValueError, match=r"labels \['0', '1', '2'\] are not among the choices.*--label-map"):
        eval_data.load([SEMEVAL], FIN, None, 0.3, None, "text", "label", None, None, source_rows=100,
                       source_text_col="2", source_label_col="1")
    with pytest.raises(ValueError, match="not a JSON object"):
        eval_data.parse_label_map("{negative: Bearish}")
    leak = tmp_path / "source.csv"
    stream = eval_data.read([TSE], "text", "sentiment", None)
    leak.write_text("text,label\n" + "\n".join(f'"{t}",{y}' for t, y in
                                                 zip(stream.texts[:5], stream.labels[:5], strict=True)
                                                 if '"' not in t) + "\nsomething else entirely,neutral\n")
    d = eval_data.load([leak], TSE, None, 0.3, None, "text", "sentiment", None, ["negative", "neutral", "positive"],
                       source_label_col="label")
    assert d.source.texts == ["something else entirely"] and "removed" in d.notes[-1]


def test_oracle_run_adds_up_and_learns(harness):
    # No gate margin to meet: on 240 items the holdout is a dozen texts, and this test is about the accounting.
    r = harness.run("oracle", make_reviewer("oracle", harness.settings), stage_size=80,
                    review_rule="confidence", review_confidence_threshold=0.6, review_max_share=0.3, gate_margin=1.0)
    assert len(r["stages"]) == 3 and r["items"] == 240
    assert r["reviewer_accuracy"] == 1.0  # the gold label
    assert r["reviewed_share"] + r["human_share"] + r["auto_share"] == pytest.approx(1.0)
    assert r["human_share"] == 0.0
    assert all(s["hard_share"] <= 0.3 + 1e-9 for s in r["stages"])  # REVIEW_MAX_SHARE holds per stage
    # Without the re-label pass, the final labels are the reviewed (right) ones plus the auto-accepted ones.
    assert r["final_accuracy_without_relabel"] == pytest.approx(
        r["reviewed_share"] + r["auto_share"] * r["auto_accuracy"])
    assert all(s["training"] == "promoted" for s in r["stages"])  # run_stage trained and promoted each stage
    assert set(r["specialists"]) == {"tfidf-lr", "minilm-lr", "tfidf-nb"}
    assert 0.0 < r["test_auto_share"] <= 1.0 and 0.0 <= r["test_auto_accuracy"] <= 1.0
    last, claim = r["stages"][-1], r["auto_accuracy_claim"]
    assert last["auto_items"] == round(last["items"] * (1 - last["reviewed_share"]))
    assert claim["stated"] < min(s["auto_accuracy"] for s in r["stages"][-3:])
    assert claim["unseen"] == r["test_auto_accuracy"]
    assert set(claim["per_stage"]) == {s["stage"] for s in r["stages"][-3:]}
    assert claim["met"] == (claim["unseen"] >= claim["stated"])
    assert all(0.0 <= s["disagreement_share"] <= 1.0 for s in r["stages"])
    # The paper's hard share and the stated confidence on the fixed unseen test, stage by stage.
    assert all(0.0 <= s["test_disagreement_share"] <= 1.0 and 0.0 < s["test_mean_confidence"] <= 1.0
               for s in r["stages"])
    # Every run also records its share under the eval runs' 0.9, whatever its rule: under 0.6 is a part of it.
    assert all(s["below_reference_share"] >= s["hard_share_before_cap"] - 1e-9 and
               s["test_below_reference_share"] >= s["test_hard_share_before_cap"] - 1e-9 for s in r["stages"])
    # Each stage says how true its confidence is on the test set, and what its temperature was fitted on: the held-out
    # corrections so far beside the held-out replayed rows.
    assert all(0.0 <= s["test_ece"] <= 1.0 for s in r["stages"])
    assert all(s["calibration"]["on"] == "project holdout + replay holdout" and s["calibration"]["temperature"] > 0
               for s in r["stages"])
    assert [s["calibration"]["project_rows"] for s in r["stages"]] == sorted(
        s["calibration"]["project_rows"] for s in r["stages"])  # the holdout only grows
    # The last stage's models are the final ones: what they send for review of the test set is the same count,
    # before the cap, as what the final figures accept after it.
    below, sent = last["test_hard_share_before_cap"], 1 - r["test_auto_share"]
    assert sent == pytest.approx(below) if below <= 0.3 else sent <= 0.3 + 1 / 120
    from backend.labelstudio.config import project_bundle_key
    from backend.serving.bundles import BundleStore

    bundles = BundleStore(harness.workdir / "oracle" / "models")
    history = bundles.history(project_bundle_key("evaluation", "label"))
    assert len(history) >= 1  # the project bundle the stages promoted


def test_an_audit_is_reviewed_within_the_same_spend_and_calibrates_the_later_stages(harness):
    from backend.decision.audit import is_audit

    r = harness.run("audit", make_reviewer("oracle", harness.settings), stage_size=80, review_rule="confidence",
                    review_confidence_threshold=0.6, review_max_share=0.3, gate_margin=1.0, review_audit_share=0.1)
    spots = [i for i in range(240) if is_audit("evaluation", i, 0.1)]
    assert sum(s["audit_items"] for s in r["stages"]) == len(spots) >= 10
    assert all(s["reviewed_share"] <= 0.3 + 1e-9 for s in r["stages"])  # the audit comes out of REVIEW_MAX_SHARE
    assert all(0 <= s["audit_auto_right"] <= s["audit_auto_items"] <= s["audit_items"] for s in r["stages"])
    assert r["settings"]["review_audit_share"] == 0.1
    # Stage by stage the audited corrections pile up; once there are ten, the temperature is fitted on them.
    rows = [s["calibration"]["audit_rows"] for s in r["stages"]]
    assert rows == sorted(rows) and rows[-1] == sum(s["audit_items"] for s in r["stages"])
    assert all(s["calibration"]["on"] == ("project audit + replay holdout" if n >= 10 else "replay holdout")
               for s, n in zip(r["stages"], rows, strict=True))
    claim = r["audit_claim"]
    assert claim["unseen"] == r["test_auto_accuracy"] and "audited items" in claim["basis"]
    assert claim["met"] == (claim["unseen"] >= claim["stated"])


def test_the_stated_auto_accuracy_is_a_lower_bound_the_checked_items_support():
    from backend.evaluation.stream import auto_claim, wilson_lower

    assert wilson_lower(90, 100) == pytest.approx(0.8257, abs=1e-4)
    assert wilson_lower(900, 1000) > wilson_lower(90, 100)  # more checked items, a tighter bound
    assert wilson_lower(0, 0) is None and wilson_lower(10, 10) < 1.0
    stage = {"stage": 4, "auto_items": 750, "auto_accuracy": 0.8}
    assert auto_claim([stage], 0.79)["met"] is True  # within what 750 items support
    assert auto_claim([stage], 0.70)["met"] is False
    assert auto_claim([{"stage": 1, "auto_items": 0, "auto_accuracy": None}], 0.9)["met"] is None
    # One easy stage does not lift the claim: the lowest of the last three stages' bounds is stated.
    stages = [{"stage": 1, "auto_items": 750, "auto_accuracy": 0.5}, {"stage": 2, "auto_items": 750,
              "auto_accuracy": 0.8}, stage | {"stage": 3, "auto_accuracy": 0.78}, stage | {"stage": 4,
              "auto_accuracy": 0.9}]
    c = auto_claim(stages, 0.77)
    assert c["stated"] == pytest.approx(wilson_lower(round(0.78 * 750), 750)) and set(c["per_stage"]) == {2, 3, 4}
    assert c["met"] is True and auto_claim(stages[-1:], 0.77)["met"] is False
    assert "stages 2 (750 auto-accepted items), 3" in c["basis"]


def test_backlog_queue_reviews_the_hardest_of_all_accepted_items_within_the_same_spend(harness):
    r = harness.run("backlog", make_reviewer("oracle", harness.settings), stage_size=80, review_queue="backlog",
                    review_rule="confidence", review_confidence_threshold=0.9, review_max_share=0.25,
                    gate_margin=1.0)
    assert r["settings"]["review_queue"] == "backlog"
    assert [s["hard_share"] for s in r["stages"]] == [0.25, 0.25, 0.25]  # 20 of each stage's 80 new items' worth
    assert r["reviewed_share"] == pytest.approx(60 / 240) and r["reviewer_accuracy"] == 1.0
    assert r["stages"][0]["reviewed_from_backlog"] == 0  # nothing was accepted before the first stage
    assert sum(s["reviewed_from_backlog"] for s in r["stages"]) > 0  # earlier items the new models find hard
    assert r["reviewed_share"] + r["human_share"] + r["auto_share"] == pytest.approx(1.0)
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{harness.workdir / 'backlog' / 'autoannotator.db'}")
    with engine.connect() as conn:
        tasks = [row[0] for row in conn.execute(text("SELECT task_id FROM corrections"))]
    assert len(tasks) == len(set(tasks)) == 60  # each reviewed once, recorded once
    with pytest.raises(ValueError, match="review_queue"):
        harness.run("bad", make_reviewer("oracle", harness.settings), stage_size=80, review_queue="everything")


def test_simulated_reviewer_is_reported_as_a_simulation_and_its_unmeasured_labels_do_not_train(harness):
    reviewer = make_reviewer("simulated:0.5", harness.settings, seed=3)
    assert isinstance(reviewer, SimulatedReviewer) and reviewer.simulation
    r = harness.run("simulated", reviewer, stage_size=120, review_rule="confidence",
                    review_confidence_threshold=0.7)
    assert r["simulation"] is True and r["reviewer"] == "simulated:0.5"
    assert 0.2 < r["reviewer_accuracy"] < 0.8
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{harness.workdir / 'simulated' / 'autoannotator.db'}")
    with engine.connect() as conn:
        sources = dict(conn.execute(text("SELECT source, count(*) FROM corrections GROUP BY source")).all())
    assert sources == {"llm": round(r["reviewed_share"] * r["items"])}
    # Recorded as LLM labels, but nobody measured the reviewer: they weigh 0 and train nothing.
    assert r["stages"][0]["training"] == "skipped"


def test_llm_reviewer_never_turns_a_bad_answer_into_a_label(harness):
    fake = FakeLLM(default=answer("positive!!"))  # not exactly a choice: invalid
    stream = harness.data.stream
    good = {t for t, y in zip(stream.texts, stream.labels, strict=True) if y == "neutral"}
    for t in good:
        fake.script[t] = [answer('{"label": "neutral"}')]
    with serving(fake) as server:
        settings = Settings.from_env({}, openai_base_url=server.base_url, openai_api_key="k", llm_model="fake",
                                     llm_timeout_seconds=5.0)
        reviewer = LLMReviewer(settings)
        try:
            r = harness.run("llm", reviewer, stage_size=120, human_fallback=True, review_rule="confidence",
                            review_confidence_threshold=0.6, review_max_share=0.2)
        finally:
            reviewer.close()
    assert fake.calls() >= r["llm_calls"] > 0 and r["llm_tokens"] > 0
    # The LLM was new: asked beside a person, who labelled (gold); only "neutral" answers were valid ones.
    assert r["reviewer_accuracy"] == 1.0 and r["people_share"] > 0 and r["trust"]["checks"] > 0
    assert all(c["llm_accuracy"] in (None, 1.0) for c in r["trust"]["classes"])
    reviewed = round(r["llm_settled_share"] * r["items"])
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{harness.workdir / 'llm' / 'autoannotator.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT choices FROM corrections WHERE source = 'llm'")).all()
    assert len(rows) == reviewed and all(json.loads(c) == ["neutral"] if isinstance(c, str) else c == ["neutral"]
                                         for (c,) in rows)


def test_cli_writes_results_table_and_plots(tmp_path, capsys, monkeypatch):
    from backend.commands.cli import main

    # At most 20 reviewed items a stage (25 % of 80): it cannot join at stage 1 and joins at stage 2 of 2, so the
    # reports must cope with a newcomer.
    monkeypatch.setenv("PROJECT_SPECIALIST_MIN", "25")
    out = tmp_path / "out"
    main(["evaluate", "--source", str(SEMEVAL), "--source-text-col", "2", "--source-label-col", "1",
          "--stream", str(FIN), "--labels", "Bearish,Bullish,Neutral",
          "--label-map", json.dumps({"negative": "Bearish", "positive": "Bullish", "neutral": "Neutral",
                                     "0": "Bearish", "1": "Bullish", "2": "Neutral"}),
          "--reviewer", "oracle", "--stage-size", "80", "--out", str(out), "--source-rows", "300",
          "--stream-rows", "160", "--test-rows", "80", "--rule", "confidence", "--threshold", "0.6",
          "--max-review-share", "0.25", "--sweep", "0.6,0.9", "--no-progress", "--review-queue", "backlog"])
    results = json.loads((out / "results.json").read_text())
    assert results["run"]["settings"]["review_queue"] == "backlog"
    assert "minilm-project" in results["specialists"] and "minilm-project" not in results["stages"][0]["specialists"]
    assert any("minilm-project joins" in n for n in results["run"]["stages"][1]["training_notes"])
    for key in ("final_accuracy", "reviewed_share", "vote_accuracy", "specialists", "stages", "llm_calls",
                "llm_tokens", "llm_only_tokens"):
        assert key in results
    assert results["reviewed_share"] <= 0.25 + 1e-9 and results["llm_calls"] == 0
    assert [p["threshold"] for p in results["sweep"]] == [0.6, 0.9]
    assert results["sweep"][0]["final_accuracy"] == results["final_accuracy"]
    assert all({"hard_share", "specialists", "ensemble"} <= set(s) for s in results["stages"])
    md = (out / "results.md").read_text()
    assert "| final accuracy (stream's final labels) |" in md and "SIMULATION" not in md
    for png in ("stages.png", "tradeoff.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["final_accuracy"] == results["final_accuracy"]


def test_the_cold_start_trains_the_recipe_it_is_given(tmp_path):
    recipe = [{"name": "only-tfidf", "family": "tfidf", "params": {"classifier": "lr"}}]
    h = Harness(small(source_rows=200, stream_rows=60, test_rows=40), Settings.from_env({}), tmp_path / "w",
                tmp_path / "cache", specialists=recipe)
    cold = h.cold_start()
    assert set(cold["test_specialists"]) == {"only-tfidf"} == set(cold["stream_specialists"])


def test_cli_specialists_accepts_long_inline_json_and_files(tmp_path):
    from backend.commands.cli import _json_arg

    recipe = [{"name": f"s{i}", "family": "tfidf", "params": {"classifier": "lr", "note": "x" * 40}}
              for i in range(10)]
    inline = json.dumps(recipe)
    assert len(inline) > 255 and _json_arg(inline) == recipe  # longer than a file name may be
    (tmp_path / "recipe.json").write_text(inline)
    assert _json_arg(str(tmp_path / "recipe.json")) == recipe and _json_arg(None) is None


def test_cli_rejects_bad_reviewer_and_labels(tmp_path):
    from backend.commands.cli import main

    with pytest.raises(SystemExit, match="expected oracle, simulated:P"):
        main(["evaluate", "--source", str(SEMEVAL), "--source-text-col", "2", "--source-label-col", "1",
              "--stream", str(TSE), "--label-col", "sentiment", "--reviewer", "gpt", "--out", str(tmp_path),
              "--source-rows", "50", "--stream-rows", "20"])
    with pytest.raises(SystemExit, match="--reviewer llm needs LLM_MODEL"):
        main(["evaluate", "--source", str(SEMEVAL), "--source-text-col", "2", "--source-label-col", "1",
              "--stream", str(TSE), "--label-col", "sentiment", "--reviewer", "llm", "--out", str(tmp_path),
              "--source-rows", "50", "--stream-rows", "20"])
    with pytest.raises(SystemExit, match="not among the choices"):
        main(["evaluate", "--source", str(SEMEVAL), "--source-text-col", "2", "--source-label-col", "1",
              "--stream", str(FIN), "--out", str(tmp_path), "--source-rows", "50", "--stream-rows", "20"])
    assert not Path(tmp_path / "results.json").exists()


def test_the_noisy_oracle_is_right_with_probability_p_and_its_errors_lean_to_one_class():
    import requests

    from backend.evaluation.noisy_llm import NoisyOracle, parse_spec, serving

    labels = ["negative", "neutral", "positive"]
    gold = {f"text {i}": labels[i % 3] for i in range(3000)}
    oracle = NoisyOracle(gold, labels, 0.7, "neutral", seed=5)
    answers = {t: oracle.answer(t) for t in gold}
    right = sum(answers[t] == y for t, y in gold.items()) / len(gold)
    assert 0.67 < right < 0.73
    wrong = [answers[t] for t, y in gold.items() if answers[t] != y and y != "neutral"]
    assert wrong.count("neutral") / len(wrong) > 0.75  # skewed to one class
    assert oracle.answer("text 7") == answers["text 7"] and oracle.answer("unknown") == "abstain"
    with serving(oracle):  # a real OpenAI-compatible endpoint
        body = {"model": "m", "messages": [{"role": "system", "content": "x"},
                                           {"role": "user", "content": "Text: text 7"}]}
        r = requests.post(f"{oracle.base_url}/chat/completions", json=body, timeout=10).json()
        assert json.loads(r["choices"][0]["message"]["content"]) == {"label": answers["text 7"]}
        assert r["usage"]["prompt_tokens"] > 0
    assert parse_spec("noisy-llm:0.85:offensive") == (0.85, "offensive")
    with pytest.raises(ValueError, match="noisy-llm"):
        parse_spec("noisy-llm:high")


def test_evaluate_measures_an_llm_of_known_quality_through_the_service(tmp_path):
    from backend.evaluation.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(source=[SEMEVAL], stream=TSE, out=tmp_path / "out", reviewer="noisy-llm:0.9",
                     stage_size=80, text_col="text", label_col="sentiment", source_text_col="2",
                     source_label_col="1", source_rows=400, stream_rows=240, test_rows=120, seed=1,
                     human_fallback=True, progress=False, cache_dir=tmp_path / "cache")
    r = evaluate(cfg, Settings.from_env({}, review_max_share=0.3, human_max_share=0.15))
    assert r["simulation"] is True and r["run"]["reviewer"] == "noisy-llm:0.9"
    t = r["trust"]
    assert t["checks"] > 0 and t["answered"] >= t["checks"]
    assert t["interval"][0] <= 0.9 <= t["interval"][1]  # the ledger finds the oracle's P
    assert r["people_share"] <= 0.15 + 1e-9 and r["llm_asked_share"] <= 0.3 + 1e-9
    assert (tmp_path / "out" / "results.md").exists()
