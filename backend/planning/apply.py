"""Put a plan to work: measure its pretrained specialists on human annotations (dropping those no better than
chance), build the zero-shot bundle that serves a project before anyone has annotated.

This is the heavy side of planning: it loads checkpoints (torch, through `backend.specialists.registry`), so it
is imported only where models are allowed — background threads, workers, the CLI — never by the HTTP face.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from typing import Any

from backend.labelstudio.config import normalise_label
from backend.planning.catalog import Catalog
from backend.planning.matcher import default_specialists
from backend.planning.plan import Plan
from backend.planning.validate import no_better_than_chance
from backend.serving.bundles import BundleRef, BundleStore, Manifest, SpecialistEntry

log = logging.getLogger(__name__)

_MEASURE_ROWS = 2000  # enough to judge against chance; bounds the time a worker spends before training


def _gold(labels: Sequence[Sequence[str]], choices: Sequence[str], multiple: bool) -> list[Any]:
    index = {normalise_label(c): j for j, c in enumerate(choices)}
    gold: list[Any] = []
    for names in labels:
        idx = sorted({index[normalise_label(x)] for x in names if normalise_label(x) in index})
        gold.append(tuple(idx) if multiple else (idx[0] if len(idx) == 1 else None))
    return gold


def measure(plan: Plan, texts: Sequence[str], labels: Sequence[Sequence[str]], **runtime: Any
            ) -> dict[str, dict[str, Any]]:
    """Zero-shot accuracy of each pretrained specialist on annotated texts: {name: {correct, n, error?}}.

    Trainable specialists are not measured here: they have not learned yet; the gate on the frozen holdout judges
    them once trained.
    """
    from backend.specialists import registry

    gold = _gold(labels, plan.labels, plan.multiple)
    rows = [i for i, g in enumerate(gold) if g is not None and (not plan.multiple or g)][:_MEASURE_ROWS]
    subset = [texts[i] for i in rows]
    out: dict[str, dict[str, Any]] = {}
    for spec in plan.pretrained():
        try:
            sp = registry.create(spec["family"], spec["name"], plan.labels, plan.multiple, spec.get("params"),
                                 **runtime)
            proba = sp.predict_proba(subset) if subset else None
        except Exception as exc:  # CheckpointUnavailable, a mapping the real checkpoint does not support
            out[spec["name"]] = {"correct": 0, "n": 0, "error": f"{type(exc).__name__}: {exc}"}
            continue
        if proba is None:
            out[spec["name"]] = {"correct": 0, "n": 0}
            continue
        if plan.multiple:
            pred = [tuple(int(j) for j in (row >= 0.5).nonzero()[0]) for row in proba]
        else:
            pred = [int(row.argmax()) for row in proba]
        correct = sum(int(p == gold[i]) for p, i in zip(pred, rows, strict=True))
        out[spec["name"]] = {"correct": correct, "n": len(rows)}
    return out


def check_on_annotations(plan: Plan, texts: Sequence[str], labels: Sequence[Sequence[str]], min_annotations: int,
                         catalog: Catalog | None = None, **runtime: Any) -> bool:
    """Drop pretrained specialists no better than chance on human annotations, once there are enough of them.
    Records the measurement in `plan.checked`; returns whether it ran (the plan is then to be saved). Runs once
    per plan: below `min_annotations`, or with no pretrained specialist, nothing is judged and nothing recorded."""
    if plan.checked:
        return False
    gold = [g for g in _gold(labels, plan.labels, plan.multiple) if g is not None and (not plan.multiple or g)]
    if len(gold) < max(min_annotations, 1) or not plan.pretrained():
        return False
    results = measure(plan, texts, labels, **runtime)
    for name, r in results.items():
        if r.get("error"):
            plan.drop(name, f"could not be measured: {r['error']}")
            continue
        r["accuracy"] = round(r["correct"] / r["n"], 4) if r["n"] else None
        why = no_better_than_chance(r["correct"], gold[:r["n"]], len(plan.labels), min_annotations) if r["n"] else None
        if why:
            plan.drop(name, why)
    if not plan.specialists and catalog is not None:
        plan.specialists = default_specialists(catalog, plan.language or None)
        plan.notes.append("every pretrained specialist was dropped: the trainable offline specialists serve")
    plan.checked = {"annotations": len(gold), "at": time.time(), "results": results}
    return True


def build_zero_shot(plan: Plan, store: BundleStore, promote: bool = True, **runtime: Any) -> BundleRef | None:
    """A bundle of the plan's pretrained specialists alone, their labels mapped: it serves before any annotation.
    A checkpoint that fails to load is dropped from the plan with the error. Records the result in `plan.applied`.
    """
    from backend.specialists import registry

    specs = plan.pretrained()
    if not specs:
        plan.applied = {"bundle": None, "at": time.time(),
                        "note": "no pretrained specialist: the trainable ones wait for the project's annotations"}
        return None
    workdir = store.new_workdir(plan.key)
    entries = []
    try:
        for spec in specs:
            try:
                sp = registry.create("hf", spec["name"], plan.labels, plan.multiple, spec.get("params"), **runtime)
                sp.predict_proba(["warm up"])  # loads the weights and builds the label projection: proves both
                version = sp.save(workdir / "specialists" / spec["name"])
            except Exception as exc:
                log.warning("plan %s: %s not loadable: %s", plan.key, spec["name"], exc)
                plan.drop(spec["name"], f"could not be loaded: {exc}")
                shutil.rmtree(workdir / "specialists" / spec["name"], ignore_errors=True)
                continue
            entries.append(SpecialistEntry(spec["name"], "hf", version, float(spec.get("weight", 1.0))))
        if not entries:
            shutil.rmtree(workdir, ignore_errors=True)
            plan.applied = {"bundle": None, "at": time.time(), "note": "no pretrained specialist could be loaded"}
            return None
        manifest = Manifest(key=plan.key, labels=list(plan.labels), multiple=plan.multiple, specialists=entries,
                            metrics={"zero_shot": True},
                            data={"source": "", "plan": plan.key, "plan_source": plan.source, "rows": 0})
        ref = store.commit(workdir, manifest, promote=promote)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    plan.applied = {"bundle": ref.version, "at": time.time(), "zero_shot": [e.name for e in entries]}
    log.info("plan %s: zero-shot bundle %s from %s", plan.key, ref.version, [e.name for e in entries])
    return ref
