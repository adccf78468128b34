"""The annotation-stream protocol, run through the service's own code.

Cold start: `train_bundle` on the source only. Then, stage by stage: the served ensemble predicts
(`load_ensemble`), the service's router picks the hard samples (`HardSampleReview.triage`: rule, threshold,
per-class thresholds, REVIEW_MAX_SHARE), the reviewer settles them, its labels are recorded as the webhook
records annotations (`CorrectionLog`), and `finetune.trainer.run_stage` trains, gates and promotes exactly as
the rq worker does. Nothing here re-implements a decision the service makes; it only keeps the score.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np

from backend.datasets import LabelledData
from backend.decision.audit import is_audit
from backend.decision.states import RouteName
from backend.decision.voting import Decision, expected_calibration_error
from backend.evaluation.base import HardSample, StreamReviewer, Verdict
from backend.evaluation.data import EvalData, Split
from backend.labelstudio.config import parse_label_config, project_bundle_key
from backend.serving.bundles import BundleRef, BundleStore
from backend.settings import Settings

log = logging.getLogger(__name__)

PROJECT = "evaluation"
CONTROL = "label"


def label_config(labels: Sequence[str]) -> str:
    """The single-choice project the stream is annotated in."""
    choices = "".join(f"<Choice value={quoteattr(x)}/>" for x in labels)
    return (f'<View><Text name="text" value="$text"/><Choices name="{CONTROL}" toName="text" choice="single">'
            f"{choices}</Choices></View>")


@dataclass
class Scored:
    """An ensemble's answers on a split: its decisions, and each specialist's own accuracy."""

    decisions: list[Decision]
    predicted: list[str]
    accuracy: float
    specialists: dict[str, float]
    project_share: float | None = None  # with a domain router: the mean weight of the project's own specialists


def score(ensemble: Any, split: Split) -> Scored:
    """One pass per specialist; the ensemble's vote is combined from the same probabilities (and gated, if the
    bundle has a domain router, exactly as serving gates it)."""
    m = ensemble.manifest
    probas = ensemble.probabilities(split.texts)
    share = ensemble.project_share(split.texts) if ensemble.routed and len(split.texts) else None
    decisions = ensemble.decisions(split.texts, probas, share=share)
    gold = np.array(split.labels, dtype=object)
    predicted = [m.labels[d.labels[0]] for d in decisions]
    specialists = {e.name: float(np.mean(np.array([m.labels[j] for j in p.argmax(1)], dtype=object) == gold))
                   for e, p in zip(m.specialists, probas, strict=True)}
    return Scored(decisions, predicted, float(np.mean(np.array(predicted, dtype=object) == gold)), specialists,
                  None if share is None else float(np.mean(share)))


@dataclass
class Item:
    """Where one stream item ended."""

    label: str  # the final label the project holds for it
    route: str  # auto | reviewed | human (sent for review, not settled)
    predicted: str  # the ensemble's label at its stage
    verdict: Verdict | None = None
    by_person: bool = False  # a person labelled it (the audit, or a sample handed to a person)
    llm_answer: str | None = None  # what the LLM answered, whether or not it became the label


@dataclass
class RunState:
    items: list[Item] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)


class Harness:
    """One evaluation: the data, the settings every run shares, and where runs write their models."""

    def __init__(self, data: EvalData, settings: Settings, workdir: Path, cache_dir: Path,
                 progress: Callable[..., Any] | None = None, specialists: list[dict[str, Any]] | None = None):
        self.data = data
        self.specialists = specialists  # the cold start's recipe; the stages keep the served bundle's
        self.settings = settings
        self.workdir = workdir
        self.cache_dir = cache_dir
        self.progress = progress
        self.config = label_config(data.labels)
        self.space = parse_label_config(self.config)
        self.control = self.space.controls[0]
        self.cold: dict[str, Any] = {}
        self.cold_stream: Scored | None = None  # the cold-start ensemble on the whole stream (plain vote)
        self._loaded: tuple[Path, Any] | None = None

    # -- settings and models ------------------------------------------------------------------------------------
    def settings_for(self, run_dir: Path, **changes: Any) -> Settings:
        return self.settings.with_(data_dir=run_dir, model_dir=run_dir / "models", database_url="",
                                   bundle_refresh_seconds=0.0, **changes)

    def _link_cache(self, run_dir: Path) -> None:
        models = run_dir / "models"
        models.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        link = models / "cache"
        if not link.exists():
            link.symlink_to(self.cache_dir.resolve(), target_is_directory=True)

    def ensemble(self, settings: Settings, ref: BundleRef) -> Any:
        """The bundle's ensemble, loaded once: a stage scores the test set and the next stage's items with it."""
        from backend.serving.ensemble import load_ensemble

        if self._loaded is None or self._loaded[0] != Path(ref.path):
            bundles = BundleStore(settings.model_dir)
            self._loaded = (Path(ref.path), load_ensemble(ref, bundles.manifest(ref), **settings.runtime))
        return self._loaded[1]

    def current(self, settings: Settings) -> BundleRef:
        bundles = BundleStore(settings.model_dir)
        ref = bundles.current(project_bundle_key(PROJECT, CONTROL)) or bundles.current(self.control.bundle_key)
        if ref is None:
            raise RuntimeError("no bundle to serve: the cold start did not commit one")
        return ref

    # -- cold start -----------------------------------------------------------------------------------------------
    def cold_start(self) -> dict[str, Any]:
        """Train the default specialists on the source only, and score them before any stream item is seen."""
        from finetune.training import train_bundle

        run_dir = self.workdir / "cold-start"
        shutil.rmtree(run_dir, ignore_errors=True)
        self._link_cache(run_dir)
        settings = self.settings_for(run_dir)
        source_file = self.workdir / "source.jsonl"
        _write_jsonl(source_file, self.data.source)
        t0 = time.perf_counter()
        data = LabelledData(self.data.source.texts, [[y] for y in self.data.source.labels], str(source_file))
        ref, manifest = train_bundle(BundleStore(settings.model_dir), self.data.labels, False, data,
                                     self.specialists, data_info={"text_col": "text", "label_col": "label"},
                                     **settings.runtime)
        seconds = time.perf_counter() - t0
        ensemble = self.ensemble(settings, ref)
        stream = score(ensemble, self.data.stream)
        test = score(ensemble, self.data.test)
        self.cold = {"seconds": round(seconds, 1), "version": ref.version, "source_rows": len(self.data.source),
                     "stream_vote_accuracy": stream.accuracy, "stream_specialists": stream.specialists,
                     "test_accuracy": test.accuracy, "test_specialists": test.specialists,
                     "calibration": manifest.metrics.get("ensemble", {})}
        self.cold_stream = stream
        if self.data.source_test is not None:
            self.cold["source_test_accuracy"] = score(ensemble, self.data.source_test).accuracy
        return self.cold

    # -- one stream run -------------------------------------------------------------------------------------------
    def run(self, name: str, reviewer: StreamReviewer, stage_size: int, relabel: bool = True,
            human_fallback: bool = False, review_queue: str = "stage", **changes: Any) -> dict[str, Any]:
        """Stream every item in stages through predict → route → review → record → train; returns the figures.

        `review_queue` "stage" reviews the hardest of each stage's new items; "backlog" re-scores every item
        accepted so far beside the new ones and reviews the hardest of all, as a Label Studio project does when
        annotators take tasks by the refreshed prediction score (uncertainty sampling). The spend is the same:
        REVIEW_MAX_SHARE of the stage's new items.
        """
        from backend.review.triage import HardSampleReview
        from backend.store import Store
        from finetune.corrections import CorrectionLog
        from finetune.trainer import run_stage

        if review_queue not in ("stage", "backlog"):
            raise ValueError(f"review_queue must be 'stage' or 'backlog', not {review_queue!r}")
        if not self.cold:
            self.cold_start()
        if getattr(reviewer, "service", False):  # the LLM the reviewer was configured with, served as the service
            from dataclasses import fields as dc_fields

            from backend.llm import ReviewerConfig

            changes = {**{f.name: getattr(reviewer.settings, f.name) for f in dc_fields(ReviewerConfig)
                          if hasattr(reviewer.settings, f.name)}, **changes}
        run_dir = self.workdir / name
        shutil.rmtree(run_dir, ignore_errors=True)
        shutil.copytree(self.workdir / "cold-start", run_dir, symlinks=True,
                        ignore=shutil.ignore_patterns("*.db", "*.db-*"))
        settings = self.settings_for(run_dir, **changes)
        store = Store(settings.database_url)
        store.note_project(PROJECT, self.space.config_hash, None, [], [], self.config)
        corrections = CorrectionLog(store, settings.holdout_every, settings.review_audit_share)
        router = HardSampleReview(settings)
        # An LLM reviewer is run through the service's own routing: budgets, trust ledger, audit (`_serve_stage`).
        service = HardSampleReview(settings, store.engine) if getattr(reviewer, "service", False) else None
        names = list(self.data.labels)
        stream = self.data.stream
        state = RunState(items=[None] * len(stream))  # type: ignore[list-item]
        bar = self.progress(total=len(stream), desc=name, unit="item") if self.progress else None
        for stage, start in enumerate(range(0, len(stream), stage_size), start=1):
            t0 = time.perf_counter()
            new = list(range(start, min(start + stage_size, len(stream))))
            backlog = ([i for i in range(start) if state.items[i].route == RouteName.AUTO]
                       if review_queue == "backlog" else [])
            pool = backlog + new  # stream positions scored this stage; new items last
            part = stream.take(pool)
            ensemble = self.ensemble(settings, self.current(settings))
            scored = score(ensemble, part)
            store.note_texts(PROJECT, [(i, stream.texts[i]) for i in new])  # as /predict notes a project's tasks
            first_new = len(backlog)
            # REVIEW_AUDIT_SHARE: new items the service would send to a human whatever their confidence
            flags = [k >= first_new and is_audit(PROJECT, pool[k], settings.review_audit_share)
                     for k in range(len(pool))] if settings.review_audit_share > 0 else None
            spots = [k for k, f in enumerate(flags or []) if f]
            outcomes, hard = router.triage(names, scored.decisions, budget_items=len(new), audited=flags)
            # What the router would have done without the audit: the stage's hard share, and which audited
            # items stand for the auto-accepted ones.
            plain_out, plain_hard = router.triage(names, scored.decisions, budget_items=len(new)) if spots \
                else (outcomes, hard)
            hard_new = sum(1 for k in hard if k >= first_new)
            if service is not None:  # the service routes, asks the LLM and trusts it as far as people measured it
                self._serve_stage(service, settings, state, stage, pool, part, scored, flags or [], first_new,
                                  corrections, human_fallback)
                samples: list[HardSample] = []
            else:
                samples = _samples(hard, pool, part, scored)
            verdicts = reviewer.review(PROJECT, names, samples) if samples else []
            by_pos = dict(zip(hard, verdicts, strict=True)) if service is None else {}
            # The audit is a person's job in the service (never the LLM's): a human reviewer takes it, else gold.
            audit_samples = _samples(spots, pool, part, scored)
            audit_verdicts = (reviewer.review(PROJECT, names, audit_samples) if reviewer.source == "human"
                              else [Verdict(x.gold, "audit: settled by a human") for x in audit_samples]) \
                if spots and service is None else []
            if service is None:
                by_pos.update(zip(spots, audit_verdicts, strict=True))
                for k in range(first_new, len(pool)):
                    state.items[pool[k]] = Item(scored.predicted[k], RouteName.AUTO, scored.predicted[k])
            spot_set = set(spots)
            for k, v in by_pos.items():
                i, text = pool[k], part.texts[k]
                predicted = state.items[i].predicted
                human = k in spot_set
                if v.label is None and human_fallback:
                    v = Verdict(part.labels[k], f"{v.status}; settled by a human (oracle fallback)",
                                v.prompt_tokens, v.completion_tokens, v.cost_usd, v.raw)
                    human = True
                if v.label is None:
                    state.items[i] = Item(predicted, RouteName.HUMAN, predicted, v)
                    continue
                state.items[i] = Item(v.label, "reviewed", predicted, v)
                if reviewer.source == "human" or human:
                    corrections.record(PROJECT, [{"control": CONTROL, "choices": [v.label], "text": text,
                                                  "task_id": i, "annotation_id": i + 1,
                                                  "annotator": reviewer.name}], seq=stage)
                else:
                    corrections.record_llm(PROJECT, i, CONTROL, v.label, text)
            predict_s = time.perf_counter() - t0
            t1 = time.perf_counter()
            outcome = run_stage(PROJECT, settings, store)
            train_s = time.perf_counter() - t1
            served = self.ensemble(settings, self.current(settings))
            after = score(served, self.data.test)
            # The same question on fixed items: stage samples differ in difficulty, the test set does not.
            test_out, test_hard = router.triage(names, after.decisions)
            test_conf = np.array([d.confidence for d in after.decisions])
            auto = [(state.items[i], stream.labels[i]) for i in new if state.items[i].route == RouteName.AUTO]
            would_auto = [k for k in spots if k not in set(plain_hard)]
            state.stages.append({
                "stage": stage, "items": len(new), "hard_share": len(hard) / len(new),
                "hard_share_before_cap": below_threshold(plain_out, plain_hard, first_new) / len(new),
                "reviewed_share": (sum(state.items[pool[k]].route == "reviewed" for k in [*hard, *spots])
                                   if service is None else
                                   sum(state.items[i].route == "reviewed" for i in new)) / len(new),
                "people_share": sum(state.items[i].by_person for i in new) / len(new),
                # The audit: the ensemble's own answer on a random sample, as a live project would check it.
                "audit_items": len(spots),
                "audit_accuracy": _mean([scored.predicted[k] == part.labels[k] for k in spots]),
                "audit_auto_items": len(would_auto),
                "audit_auto_right": sum(scored.predicted[k] == part.labels[k] for k in would_auto),
                "reviewed_from_backlog": len(hard) - hard_new,
                "auto_accuracy": _mean([it.label == y for it, y in auto]), "auto_items": len(auto),
                "disagreement_share": _mean([not scored.decisions[k].unanimous for k in range(first_new, len(pool))]),
                "below_reference_share": _mean([scored.decisions[k].confidence < REFERENCE_THRESHOLD
                                                for k in range(first_new, len(pool))]),
                "stage_vote_accuracy": _mean([scored.predicted[k] == part.labels[k]
                                              for k in range(first_new, len(pool))]),
                "test_accuracy": after.accuracy, "test_specialists": after.specialists,
                "test_project_share": after.project_share,
                "test_hard_share_before_cap": below_threshold(test_out, test_hard) / max(len(self.data.test), 1),
                # Above the accuracy: overconfident; below it: the temperature softens more than the errors ask.
                "test_mean_confidence": _mean(test_conf),
                # The paper's hard samples on the same fixed items: the specialists do not all answer alike.
                "test_disagreement_share": _mean([not d.unanimous for d in after.decisions]),
                # The eval runs' threshold rule on the same items, whatever this run's rule: runs compare.
                "test_below_reference_share": _mean(test_conf < REFERENCE_THRESHOLD),
                # Whether the confidence the threshold reads means what it says on the project's own texts.
                "test_ece": expected_calibration_error(
                    test_conf,
                    np.array(after.predicted, dtype=object) == np.array(self.data.test.labels, dtype=object)),
                "calibration": {"temperature": served.manifest.temperature,
                                "unanimous_temperature": served.manifest.unanimous_temperature,
                                **served.manifest.metrics.get("calibration", {})},
                "vote_weights": served.manifest.vote_weights,
                "training": outcome.status, "training_notes": outcome.notes,
                "seconds_predict_review": round(predict_s, 1), "seconds_training": round(train_s, 1)})
            if bar is not None:
                bar.update(len(new))
                bar.set_postfix(stage=stage, hard=f"{len(hard) / len(new):.0%}", test=f"{after.accuracy:.3f}")
        if bar is not None:
            bar.close()
        figures = self._figures(settings, reviewer, state, relabel, after)
        figures["settings"]["review_queue"] = review_queue
        if service is not None:
            service.forget(PROJECT)
            figures["trust"] = trust_figures(service.ledger(PROJECT, CONTROL, names), state, stream.labels)
            stated = service.stated(PROJECT, CONTROL)
            if stated is not None:  # TARGET_ACCURACY: the threshold the audit supports, checked on unseen data
                conf = np.array([d.confidence for d in after.decisions])
                right = np.array(after.predicted, dtype=object) == np.array(self.data.test.labels, dtype=object)
                kept = conf >= stated.threshold
                unseen = float(right[kept].mean()) if kept.any() else None
                figures["target"] = {**stated.as_dict(), "unseen_auto_share": float(kept.mean()),
                                     "unseen_auto_accuracy": unseen,
                                     "holds": None if unseen is None or not stated.met else unseen >= stated.target}
            figures["settings"].update({k: getattr(settings, k) for k in (
                "llm_audit_share", "human_max_share", "human_cost_usd", "llm_model",
                "target_accuracy")})
        return figures

    def _serve_stage(self, service: Any, settings: Settings, state: RunState, stage: int, pool: Sequence[int],
                     part: Split, scored: Scored, flags: Sequence[bool], first_new: int, corrections: Any,
                     human_fallback: bool) -> None:
        """One stage as the service runs it: `HardSampleReview.apply` routes every item (auto, LLM, person) within
        the budgets; a person's label (the gold, with `human_fallback`) is recorded as the webhook records an
        annotation, checks included, and an accepted LLM answer as an LLM-settled correction."""
        from backend.store.trust import TrustLedger

        names = list(self.data.labels)
        trust = TrustLedger(service.engine)
        outs = service.apply(PROJECT, False, names, part.texts, scored.decisions, examples=lambda: _shots(corrections),
                             audited=list(flags) or None, control=CONTROL, task_ids=list(pool), deadline=None)
        for k in range(first_new, len(pool)):
            state.items[pool[k]] = Item(scored.predicted[k], RouteName.AUTO, scored.predicted[k])
        for k, o in enumerate(outs):
            i, text, gold, predicted = pool[k], part.texts[k], part.labels[k], scored.predicted[k]
            res = o.review
            asked = res is not None
            verdict = Verdict(o.labels[0] if o.route == RouteName.LLM else None, res.status if res else "none",
                              res.prompt_tokens if res else 0, res.completion_tokens if res else 0,
                              res.cost_usd if res else 0.0, res.raw if res else "")
            llm_answer = res.verdict if res is not None else None
            if o.route == RouteName.LLM:
                state.items[i] = Item(o.labels[0], "reviewed", predicted, verdict, llm_answer=llm_answer)
                corrections.record_llm(PROJECT, i, CONTROL, o.labels[0], text, settings.llm_model)
            elif o.route == RouteName.HUMAN and human_fallback:
                state.items[i] = Item(gold, "reviewed", predicted, verdict, by_person=True, llm_answer=llm_answer)
                corrections.record(PROJECT, [{"control": CONTROL, "choices": [gold], "text": text, "task_id": i,
                                              "annotation_id": i + 1, "annotator": "person"}], seq=stage)
                conf = scored.decisions[k].confidence
                if llm_answer is not None:
                    trust.record(PROJECT, CONTROL, settings.llm_model, i, llm_answer, gold, predicted, conf, o.audit)
                if k < len(flags) and flags[k]:
                    trust.record_audit(PROJECT, CONTROL, i, predicted, gold, conf)
            elif o.route == RouteName.HUMAN:
                state.items[i] = Item(predicted, RouteName.HUMAN, predicted, verdict, llm_answer=llm_answer)
            elif asked:
                state.items[i] = Item(predicted, RouteName.AUTO, predicted, verdict, llm_answer=llm_answer)
        service.forget(PROJECT)

    # -- figures --------------------------------------------------------------------------------------------------
    def _figures(self, settings: Settings, reviewer: StreamReviewer, state: RunState, relabel: bool,
                 final_test: Scored) -> dict[str, Any]:
        from backend.review.triage import HardSampleReview

        gold = self.data.stream.labels
        items = state.items
        n = len(items)
        final = [it.label for it in items]
        no_relabel = _mean([a == b for a, b in zip(final, gold, strict=True)])
        ensemble = self.ensemble(settings, self.current(settings))
        if relabel:
            # The final models re-predict what nobody reviewed, as a new model version re-predicts a project.
            todo = [i for i, it in enumerate(items) if it.route != "reviewed"]
            again = score(ensemble, self.data.stream.take(todo))
            for i, label in zip(todo, again.predicted, strict=True):
                final[i] = label
        reviewed = [i for i, it in enumerate(items) if it.route == "reviewed"]
        auto = [i for i, it in enumerate(items) if it.route == RouteName.AUTO]
        verdicts = [it.verdict for it in items if it.verdict is not None]
        tokens = sum(v.prompt_tokens + v.completion_tokens for v in verdicts)
        calls = sum(1 for v in verdicts if v.prompt_tokens + v.completion_tokens > 0)
        # Unseen data: how the final router and models would treat the test set, as one batch.
        _, hard = HardSampleReview(settings).triage(self.data.labels, final_test.decisions)
        hard_set = set(hard)
        test_auto = [i for i in range(len(self.data.test)) if i not in hard_set]
        figures: dict[str, Any] = {
            "reviewer": reviewer.name, "simulation": reviewer.simulation,
            "final_accuracy": _mean([a == b for a, b in zip(final, gold, strict=True)]),
            "final_accuracy_without_relabel": no_relabel, "relabel": relabel,
            "reviewed_share": len(reviewed) / n,
            "human_share": sum(it.route == RouteName.HUMAN for it in items) / n,
            "people_share": sum(it.by_person for it in items) / n,
            "llm_settled_share": sum(it.route == "reviewed" and not it.by_person and it.llm_answer is not None
                                     for it in items) / n,
            "llm_asked_share": sum(it.llm_answer is not None for it in items) / n,
            "auto_share": len(auto) / n,
            "auto_accuracy": _mean([items[i].label == gold[i] for i in auto]),
            "reviewer_accuracy": _mean([items[i].label == gold[i] for i in reviewed]),
            "vote_accuracy": self.cold["stream_vote_accuracy"],
            "specialists": final_test.specialists, "test_accuracy": final_test.accuracy,
            "test_auto_share": len(test_auto) / max(len(self.data.test), 1),
            "test_auto_accuracy": _mean([final_test.predicted[i] == self.data.test.labels[i] for i in test_auto]),
            "llm_calls": calls, "llm_tokens": tokens,
            "llm_cost_usd": round(sum(v.cost_usd for v in verdicts), 6),
            "stages": state.stages, "items": n,
            "settings": {"review_rule": settings.review_rule,
                         "review_confidence_threshold": settings.review_confidence_threshold,
                         "review_max_share": settings.review_max_share, "holdout_every": settings.holdout_every,
                         "replay_size": settings.replay_size, "gate_margin": settings.gate_margin,
                         "review_audit_share": settings.review_audit_share},
        }
        if self.data.source_test is not None:
            scored = score(ensemble, self.data.source_test)
            before = self.cold["source_test_accuracy"]
            figures["source_test"] = {"before": before, "after": scored.accuracy,
                                      "change_points": round(100 * (scored.accuracy - before), 2),
                                      "project_share": scored.project_share}
        figures["test_tradeoff"] = review_curve(final_test, self.data.test.labels)
        figures["auto_accuracy_claim"] = auto_claim(state.stages, figures["test_auto_accuracy"])
        if settings.review_audit_share > 0:
            figures["audit_claim"] = audit_claim(state.stages, figures["test_auto_accuracy"])
        return figures


#: The confidence threshold most eval runs route at; every run records its share below it, whatever its own rule.
REFERENCE_THRESHOLD = 0.9


def below_threshold(outcomes: Sequence[Any], hard: Sequence[int], first: int = 0) -> int:
    """How many of outcomes[first:] the router found hard before REVIEW_MAX_SHARE released some to "auto"."""
    capped = sum("REVIEW_MAX_SHARE" in outcomes[k].reason for k in range(first, len(outcomes)))
    return sum(1 for k in hard if k >= first) + capped


def review_curve(scored: Scored, gold: Sequence[str], shares: Sequence[float] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25,
                                                                                     0.3, 0.4, 0.5)) -> list[dict]:
    """Accuracy when the least confident share is reviewed correctly and the rest is accepted."""
    conf = np.array([d.confidence for d in scored.decisions])
    right = np.array(scored.predicted, dtype=object) == np.array(gold, dtype=object)
    order = np.argsort(conf, kind="stable")
    out = []
    for share in shares:
        k = round(share * len(order))
        fixed = right.copy()
        fixed[order[:k]] = True
        out.append({"reviewed_share": share, "accuracy": float(fixed.mean()),
                    "auto_accuracy": float(right[order[k:]].mean()) if k < len(order) else None})
    return out


def wilson_lower(right: int, n: int, z: float = 1.96) -> float | None:
    """The lower end of the Wilson score interval: an accuracy that n checked items support at ~95%."""
    if n <= 0:
        return None
    p = right / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - spread) / (1 + z * z / n)


def auto_claim(stages: Sequence[dict[str, Any]], unseen: float | None, last: int = 3) -> dict[str, Any]:
    """The accuracy a team is told its auto-accepted labels have, and whether unseen data bears it out.

    Each of the last stages' auto-accepted stream items (their labels were checked against gold here, by an audit
    sample in a live project) gives a 95% lower bound; the claim is the lowest of them. One stage is not enough:
    the unseen check is a sample too, and one easy stage lifted tse-paper's last-stage bound above what the final
    models reached on unseen data; the lowest recent bound is what one easy stage cannot lift. It is checked
    against the final models' auto-accepted share of the unseen test set.
    """
    recent = [s for s in stages[-last:] if s.get("auto_items", 0) > 0 and s.get("auto_accuracy") is not None]
    bounds = {s["stage"]: wilson_lower(round(s["auto_accuracy"] * s["auto_items"]), s["auto_items"])
              for s in recent}
    stated = min(bounds.values()) if bounds else None
    basis = ("lowest Wilson 95% lower bound of stages "
             + ", ".join(f"{s['stage']} ({s['auto_items']} auto-accepted items)" for s in recent))
    return {"stated": stated, "basis": basis, "per_stage": bounds,
            "unseen": unseen, "met": None if stated is None or unseen is None else unseen >= stated}


def audit_claim(stages: Sequence[dict[str, Any]], unseen: float | None, last: int = 3) -> dict[str, Any]:
    """The auto-accepted accuracy a live project can state without gold labels: from the audited items the router
    would have accepted, over the last `last` stages (older models count too, so it errs low), as a Wilson 95%
    lower bound, checked against the final models' auto-accepted share of the unseen test set."""
    recent = list(stages)[-last:]
    n = sum(s.get("audit_auto_items", 0) for s in recent)
    right = sum(s.get("audit_auto_right", 0) for s in recent)
    stated = wilson_lower(right, n)
    first = recent[0]["stage"] if recent else None
    return {"stated": stated, "observed": right / n if n else None,
            "basis": f"stages {first}-{recent[-1]['stage'] if recent else None}: {n} audited items the router "
                     "would have accepted, Wilson 95% lower bound",
            "unseen": unseen, "met": None if stated is None or unseen is None else unseen >= stated}


def no_learning(cold: Scored, gold: Sequence[str], settings: Settings, labels: Sequence[str], stage_size: int
                ) -> dict[str, float]:
    """The same router and a perfect reviewer, but the cold-start models throughout: what learning adds."""
    from backend.review.triage import HardSampleReview

    router = HardSampleReview(settings)
    right = reviewed = 0
    for start in range(0, len(gold), stage_size):
        part = cold.decisions[start:start + stage_size]
        _, hard = router.triage(labels, part)
        hard_set = set(hard)
        reviewed += len(hard)
        right += sum(1 for i in range(len(part))
                     if i in hard_set or cold.predicted[start + i] == gold[start + i])
    return {"final_accuracy": right / max(len(gold), 1), "reviewed_share": reviewed / max(len(gold), 1)}


def trust_figures(ledger: Any, state: RunState, gold: Sequence[str]) -> dict[str, Any]:
    """The ledger's estimate of the LLM beside its true accuracy on every item it answered (gold known here)."""
    from backend.decision.trust import wilson

    answered = [(it.llm_answer, gold[i]) for i, it in enumerate(state.items) if it.llm_answer is not None]
    true_by_class: dict[str, list[bool]] = {}
    for a, g in answered:
        true_by_class.setdefault(a, []).append(a == g)
    n = sum(c.by_answer.n for c in ledger.classes.values())
    right = sum(c.by_answer.llm_right for c in ledger.classes.values())
    ci = wilson(right, n)
    true = _mean([a == g for a, g in answered])
    classes = []
    for c in ledger.classes.values():
        d = c.as_dict()
        t = true_by_class.get(c.label, [])
        d["true_accuracy"] = _mean(t)
        d["true_n"] = len(t)
        lo_hi = d["llm_interval"]
        d["covered"] = None if lo_hi is None or not t else bool(lo_hi[0] <= float(np.mean(t)) <= lo_hi[1])
        classes.append(d)
    return {"checks": n, "estimate": right / n if n else None, "interval": list(ci) if ci else None,
            "true_accuracy": true, "answered": len(answered),
            "covered": None if ci is None or true is None else bool(ci[0] <= true <= ci[1]),
            "classes": classes}


def _shots(corrections: Any) -> list[tuple[str, str]]:
    """A couple of people's corrections per label, as the service's few-shot examples."""
    per: dict[str, list[tuple[str, str]]] = {}
    for r in reversed(corrections.rows(PROJECT, CONTROL)):
        if r["source"] == "human" and not r["holdout"] and len(r["choices"]) == 1:
            if len(per.setdefault(r["choices"][0], [])) < 2:
                per[r["choices"][0]].append((r["text"], r["choices"][0]))
    return [x for xs in per.values() for x in xs]


def _samples(positions: Sequence[int], pool: Sequence[int], part: Split, scored: Scored) -> list[HardSample]:
    """The items at `positions` of a stage's scored pool, as a reviewer is handed them."""
    return [HardSample(pool[k], part.texts[k], part.labels[k], scored.predicted[k], scored.decisions[k].confidence,
                       scored.decisions[k].probabilities) for k in positions]


def _mean(values: Sequence[bool] | Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _write_jsonl(path: Path, split: Split) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for text, label in zip(split.texts, split.labels, strict=True):
            fh.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
