"""One continual-learning stage for a project: build the training set, fit a candidate bundle per
control, gate it on the frozen human holdout, promote it or keep it aside with the reason.

The candidate starts from the served bundle's recipe (same specialists and parameters), is trained
on the project's human corrections (weighted up), LLM-settled labels (weighted lower) and a replay
sample of the data the served bundle came from, and is written with `promote=False`: nothing a
killed worker leaves behind is ever served.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from backend.datasets import LabelledData, load_labelled
from backend.labelstudio.config import ChoiceControl, normalise_label, parse_label_config, project_bundle_key
from backend.serving.bundles import BundleRef, BundleStore, Manifest
from backend.settings import Settings
from backend.store import Store
from backend.store.trust import TrustLedger
from finetune.corrections import CorrectionLog
from finetune.policy import Policy, gate, replay_indices
from finetune.training import DEFAULT_SPECIALISTS, ProjectRows, train_bundle

log = logging.getLogger(__name__)

# The domain router of a project bundle: tasks unlike the project's texts are answered by the bundle it started from.
# Hard routing (each task to one side) at P(project) ≥ 0.7, switched on only where a held-out ROC AUC of 0.9 shows
# the two domains apart: the choice the evaluation settled (docs/benchmarks.md §5).
DOMAIN_ROUTER = {"mode": "hard", "min_auc": 0.9, "cutoff": 0.7}


def policy_from(settings: Settings) -> Policy:
    return Policy(train_every_n=settings.train_every_n, bootstrap_min=settings.bootstrap_min_annotations,
                  replay_size=settings.replay_size, gate_margin=settings.gate_margin)


@dataclass
class StageOutcome:
    status: str  # promoted | rejected | skipped
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    data_seq: int = 0


def specialist_recipe(manifest: Manifest | None, store: BundleStore, ref: BundleRef | None,
                      settings: Settings) -> list[dict[str, Any]]:
    """The served bundle's specialists (family + params); an hf one continues from the served weights, in its own
    mode (a planned hub checkpoint, which says none, trains its head only: full fine-tuning of a base-size model is
    hours on a CPU)."""
    if manifest is None or ref is None:
        return [dict(s) for s in DEFAULT_SPECIALISTS]
    recipe = []
    for entry in manifest.specialists:
        spec = json.loads((ref.path / "specialists" / entry.name / "specialist.json").read_text())
        params = dict(spec.get("params") or {})
        if entry.family == "hf":
            # Continue from the served weights rather than the original hub checkpoint.
            params["checkpoint"] = str(ref.path / "specialists" / entry.name / "checkpoint")
            params = {**params, "mode": params.get("mode") or "head"}
        recipe.append({"name": entry.name, "family": entry.family, "params": params, "weight": entry.weight})
    return recipe


def planned_recipe(project_id: str, control: ChoiceControl, recipe: list[dict[str, Any]], served: bool,
                   human_rows: list[dict], settings: Settings) -> tuple[list[dict[str, Any]], list[str]]:
    """The recipe with the control's plan (`autoannotator plan`, or made at /setup) applied: its pretrained
    specialists judged once against chance on the human annotations (dropped ones leave), planned specialists not
    served yet join. Without a plan, the recipe as it is."""
    from backend.planning.plan import PlanStore, merge_recipe

    plans = PlanStore(settings.model_dir)
    plan = plans.for_control(project_id, control)
    if plan is None:
        return recipe, []
    notes = []
    if not plan.checked and len(human_rows) >= settings.plan_min_annotations and plan.pretrained():
        from backend.planning.apply import check_on_annotations
        from backend.planning.catalog import CatalogError, load_catalog

        try:
            catalog = load_catalog(settings.catalog_file)
        except CatalogError as exc:
            log.warning("catalog unreadable, the plan's check cannot restore defaults: %s", exc)
            catalog = None
        before = {s["name"] for s in plan.specialists}
        check_on_annotations(plan, [r["text"] for r in human_rows], [r["choices"] for r in human_rows],
                             settings.plan_min_annotations, catalog, **settings.runtime)
        plans.save(plan)
        gone = sorted(before - {s["name"] for s in plan.specialists})
        notes.append(f"{control.name}: plan checked on {len(human_rows)} human annotations"
                     + (f", dropped {gone}" if gone else ""))
    merged = merge_recipe(recipe if served else None, plan)
    return [{**s, "params": {**s["params"], "mode": s["params"].get("mode") or "head"}} if s["family"] == "hf" else s
            for s in merged], notes


PROJECT_SPECIALIST = {"name": "minilm-project", "family": "encoder", "params": {"rows": "project", "layers": 3}}


def with_project_specialist(recipe: list[dict[str, Any]], choices: list[list[str]], minimum: int
                            ) -> tuple[list[dict[str, Any]], str | None]:
    """The recipe with a specialist trained on the project's corrections alone, once there are `minimum` of them.

    The others learn the project through a replay that outnumbers it (20,000 rows against hundreds); one that
    sees only the project's data follows its domain (+1.3 points final accuracy on the financial stream), at the
    cost of what it never saw (more points lost on the source test). `minimum` 0 never adds it; corrections of
    one answer only cannot train a classifier, so they do not add it either.
    """
    present = any((s.get("params") or {}).get("rows") == "project" for s in recipe)
    if present or minimum <= 0 or len(choices) < minimum or len({tuple(c) for c in choices}) < 2:
        return recipe, None
    names = {s["name"] for s in recipe}
    spec = {**PROJECT_SPECIALIST, "params": dict(PROJECT_SPECIALIST["params"])}
    while spec["name"] in names:
        spec["name"] += "-2"
    return [*recipe, spec], spec["name"]


def anchor_for(current: BundleRef | None, manifest: Manifest | None, key: str) -> dict[str, Any] | None:
    """The domain router's anchor for a project's next bundle: the bundle the project started from.

    A project's first bundle starts from the shared one it was served; later ones keep the anchor their
    predecessor recorded. A project bundle built before the gate existed has none, and gets none.
    """
    if current is None or manifest is None:
        return None
    if current.key == key:
        if not manifest.anchor.get("key"):
            return None
        base = {"key": manifest.anchor["key"], "version": manifest.anchor["version"]}
    else:
        base = {"key": current.key, "version": current.version}
    return {**base, **DOMAIN_ROUTER}


def replay_data(manifest: Manifest | None, control: ChoiceControl, policy: Policy) -> tuple[LabelledData, dict]:
    """Rows of the data the served bundle was trained on, for labels the control still has."""
    empty = LabelledData([], [], "")
    if manifest is None:
        return empty, {}
    info = manifest.data.get("replay_source") or {k: manifest.data.get(k) for k in
                                                  ("source", "text_col", "label_col", "label_map")}
    source = info.get("source")
    if not source or not Path(source).exists():
        return empty, {}
    try:
        data = load_labelled(source, info.get("text_col") or "text", info.get("label_col") or "label",
                             info.get("label_map"), control.name, control.multiple)
    except (ValueError, OSError) as exc:
        log.warning("replay source %s unreadable: %s", source, exc)
        return empty, {}
    known = {normalise_label(x) for x in control.labels}
    keep = [i for i, names in enumerate(data.labels) if names and all(normalise_label(x) in known for x in names)]
    keep = [keep[i] for i in replay_indices(len(keep), policy.replay_size)]
    return LabelledData([data.texts[i] for i in keep], [data.labels[i] for i in keep], source), info


def fresh_mask(rows: list[dict], manifest: Manifest | None, same_project: bool, n_replay: int) -> np.ndarray:
    """Which training rows (`rows`, then `n_replay` replayed ones) the served bundle did not train on: corrections
    it does not list, and human ones changed since the data it was trained on. A bundle shared with other projects,
    or none, has seen none of them."""
    data = manifest.data if manifest is not None and same_project else {}
    seen = {*data.get("corrections", []), *data.get("llm_corrections", [])}
    base_seq = data.get("data_seq")
    new = [r["id"] not in seen or (base_seq is not None and r["source"] == "human" and r["changed_seq"] > base_seq)
           for r in rows]
    return np.r_[np.array(new, dtype=bool), np.zeros(n_replay, bool)]


def holdout_f1(bundles: BundleStore, ref: BundleRef, control: ChoiceControl, rows: list[dict], settings: Settings
               ) -> float | None:
    """Macro-F1 of a bundle on held-out human labels, over the control's labels it knows."""
    if not rows:
        return None
    from backend.serving.ensemble import load_ensemble

    manifest = bundles.manifest(ref)
    index = {normalise_label(x): i for i, x in enumerate(manifest.labels)}
    cols = [index[normalise_label(x)] for x in control.labels if normalise_label(x) in index]
    names = [manifest.labels[c] for c in cols]
    if len(cols) < 2:
        return None
    ensemble = load_ensemble(ref, manifest, **settings.runtime)
    decisions = ensemble.predict([r["text"] for r in rows], cols)
    pos = {normalise_label(x): j for j, x in enumerate(names)}
    if control.multiple:
        gold = np.zeros((len(rows), len(cols)), dtype=int)
        pred = np.zeros_like(gold)
        for i, (r, d) in enumerate(zip(rows, decisions, strict=True)):
            for c in r["choices"]:
                if normalise_label(c) in pos:
                    gold[i, pos[normalise_label(c)]] = 1
            for j in d.labels:
                pred[i, j] = 1
        return float(f1_score(gold, pred, average="macro", zero_division=0))
    gold1 = [pos.get(normalise_label(r["choices"][0]), -1) for r in rows]
    pred1 = [d.labels[0] for d in decisions]
    return float(f1_score(gold1, pred1, average="macro", labels=list(range(len(cols))), zero_division=0))


def llm_rows(store: Store, project_id: str, control: ChoiceControl, rows: list[dict], policy: Policy,
             settings: Settings) -> tuple[list[dict], list[float]]:
    """The LLM-settled rows worth training on, and each one's weight: the policy's LLM weight scaled by what its model
    has measurably earned on that class (backend/decision/trust.py); rows of an untrusted class weigh 0 and are left
    out."""
    if policy.llm_weight <= 0:
        return [], []
    ledgers: dict[str, Any] = {}
    trust = TrustLedger(store.engine)
    kept, weights = [], []
    for r in rows:
        if r["source"] != "llm":
            continue
        who = str(r.get("annotator") or "")
        model = who[4:] if who.startswith("llm:") and len(who) > 4 else settings.llm_model
        if model not in ledgers:
            ledgers[model] = trust.ledger(project_id, control.name, model, list(control.labels))
        w = ledgers[model].training_weight(r["choices"][0], policy.llm_weight) if len(r["choices"]) == 1 else 0.0
        if w > 0:
            kept.append(r)
            weights.append(w)
    return kept, weights


def run_stage(project_id: str, settings: Settings, store: Store) -> StageOutcome:
    project = store.project(project_id)
    if not project or not project.get("label_config"):
        return StageOutcome("skipped", [f"project {project_id}: no label config known yet (no /setup or "
                                        "PROJECT_UPDATED seen)"])
    space = parse_label_config(project["label_config"])
    bundles = BundleStore(settings.model_dir)
    corrections = CorrectionLog(store, settings.holdout_every, settings.review_audit_share)
    policy = policy_from(settings)
    out = StageOutcome("skipped")
    trained = promoted = 0
    for control in space.controls:
        known = {normalise_label(x) for x in control.labels}
        # A choice removed from the config drops its rows; single choice needs exactly one label.
        rows = [r for r in corrections.rows(project_id, control.name)
                if all(normalise_label(c) in known for c in r["choices"])
                and (control.multiple or len(r["choices"]) == 1)]
        out.data_seq = max([out.data_seq, *(r["changed_seq"] for r in rows)])
        train_rows = [r for r in rows if not r["holdout"]]
        holdout_rows = [r for r in rows if r["holdout"] and r["source"] == "human"]
        human = [r for r in train_rows if r["source"] == "human"]
        llm, llm_weights = llm_rows(store, project_id, control, train_rows, policy, settings)
        key = project_bundle_key(project_id, control.name)
        current = bundles.current(key) or bundles.current(control.bundle_key)
        # LLM-settled labels may refine a served bundle (at a weight above 0), never found a project's first one.
        if not (human or (llm and current is not None)) or (current is None and len(human) < policy.bootstrap_min):
            out.notes.append(f"{control.name}: {len(human)} human corrections, not enough to train")
            continue
        manifest = bundles.manifest(current) if current else None
        replay, replay_info = replay_data(manifest, control, policy)
        # A held-out text must not come back through the replay, or the gate would score seen data.
        seen = {r["text"] for r in rows}
        keep = [i for i, t in enumerate(replay.texts) if t not in seen]
        replay = LabelledData([replay.texts[i] for i in keep], [replay.labels[i] for i in keep], replay.source)
        texts = [r["text"] for r in human + llm] + replay.texts
        labels = [list(r["choices"]) for r in human + llm] + replay.labels
        weights = np.array([policy.human_weight] * len(human) + llm_weights
                           + [policy.replay_weight] * len(replay.texts))
        info = {"corrections": [r["id"] for r in human], "llm_corrections": [r["id"] for r in llm],
                "holdout": [r["id"] for r in holdout_rows], "replay_rows": len(replay.texts),
                "replay_source": replay_info, "base_version": current.version if current else None,
                "project": project_id, "control": control.name,
                "data_seq": max([0, *(r["changed_seq"] for r in human + llm)])}
        recipe, plan_notes = planned_recipe(project_id, control,
                                            specialist_recipe(manifest, bundles, current, settings),
                                            manifest is not None, human + holdout_rows, settings)
        out.notes.extend(plan_notes)
        own = [list(r["choices"]) for r in human + llm]
        recipe, joined = with_project_specialist(recipe, own, settings.project_specialist_min)
        if joined:
            out.notes.append(f"{control.name}: {joined} joins, trained on the {len(own)} corrections alone")
        anchor = anchor_for(current, manifest, key)
        ref, _ = train_bundle(bundles, control.labels, control.multiple,
                              LabelledData(texts, labels, f"project {project_id} corrections"),
                              recipe, promote=False, key=key, data_info=info, project=ProjectRows(
                                  sample_weight=weights,
                                  replay_rows=np.r_[np.zeros(len(human) + len(llm), bool),
                                                    np.ones(len(replay.texts), bool)],
                                  fresh_rows=fresh_mask(human + llm, manifest,
                                                        current is not None and current.key == key, len(replay.texts))
                                  if any(r.get("params", {}).get("rows") == "fresh" for r in recipe) else None,
                                  calibration=LabelledData([r["text"] for r in holdout_rows],
                                                           [list(r["choices"]) for r in holdout_rows],
                                                           f"project {project_id} held-out corrections"),
                                  audited=np.array([corrections.audited(project_id, r["task_id"])
                                                    for r in holdout_rows], dtype=bool)
                                  if settings.review_audit_share > 0 else None,
                                  anchor=anchor, domain_texts=store.texts(project_id) if anchor else ()),
                              **settings.runtime)
        trained += 1
        cand = holdout_f1(bundles, ref, control, holdout_rows, settings)
        cur = holdout_f1(bundles, current, control, holdout_rows, settings) if current else None
        verdict = gate(cand, cur, len(holdout_rows), policy, llm_rows=len(llm))
        (ref.path / "gate.json").write_text(json.dumps({"candidate_macro_f1": cand, "current_macro_f1": cur,
                                                        "current": current.version if current else None,
                                                        "holdout": len(holdout_rows), "promoted": verdict.promote,
                                                        "reason": verdict.reason}, indent=2))
        if verdict.promote:
            bundles.promote(key, ref.version)
            out.versions[control.name] = ref.version
            promoted += 1
        out.notes.append(f"{control.name}: {ref.version} {'promoted' if verdict.promote else 'kept aside'} "
                         f"({verdict.reason})")
    out.status = "promoted" if promoted else ("rejected" if trained else "skipped")
    return out
