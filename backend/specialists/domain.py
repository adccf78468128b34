"""Fit the domain model of a project bundle's router: does a text look like the project's, or like the replay's?

It is an encoder head (the same frozen encoder as `minilm-lr`, so serving adds no transformer pass) trained on the
project's texts against the replayed rows, which stand for what the anchor was trained on. The project's texts
are its corrections and every task text /predict has seen: corrections alone are the hard items, and a router
trained on them alone would take the project's easy texts for the source's. The router is switched on only where
the two are told apart on held-out rows (the anchor's `min_auc`): a project whose texts look like the source
(tweets after tweets) gains nothing from it, and a router that guesses would hand project tasks to the anchor.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from backend.specialists import registry

log = logging.getLogger(__name__)

DOMAIN_LABELS = ["anchor", "project"]
DOMAIN_SPEC = {"name": "domain", "family": "encoder", "params": {"layers": 3}}
MIN_ROWS = 20
MAX_ROWS = 5000  # per side: enough to describe a domain (the replay is 20,000)


def _domain_model(runtime: dict[str, Any]) -> Any:
    return registry.create(DOMAIN_SPEC["family"], DOMAIN_SPEC["name"], DOMAIN_LABELS, False,
                           dict(DOMAIN_SPEC["params"]), **runtime)


def fit_domain_model(path: Path, project_texts: list[str], anchor_texts: list[str], anchor: dict[str, Any],
                    seed: int = 0, **runtime: Any) -> dict[str, Any]:
    """Train the domain model into `path` if it separates the two sides; returns the manifest's `anchor` entry.

    `project_texts` are the project's (its corrections, and the task texts /predict has seen), `anchor_texts` the
    replayed rows. `anchor` carries key, version, mode, min_auc and cutoff. The entry keeps the anchor's identity
    even when the gate stays off, so that a later stage, with more of the project seen, can switch it on.
    """
    own = list(dict.fromkeys(project_texts))
    mine = set(own)
    old = list(dict.fromkeys(t for t in anchor_texts if t not in mine))
    rng = np.random.default_rng(seed)
    if len(own) > MAX_ROWS:
        own = [own[i] for i in np.sort(rng.choice(len(own), MAX_ROWS, replace=False))]
    if len(old) > MAX_ROWS:
        old = [old[i] for i in np.sort(rng.choice(len(old), MAX_ROWS, replace=False))]
    info = {**anchor, "active": False, "project_texts": len(own), "anchor_texts": len(old)}
    if len(own) < MIN_ROWS or len(old) < MIN_ROWS:
        info["reason"] = f"needs {MIN_ROWS} project and {MIN_ROWS} replayed texts"
        return info
    texts = np.array(own + old, dtype=object)
    y = np.r_[np.ones(len(own), dtype=np.int64), np.zeros(len(old), dtype=np.int64)]
    # Balanced: the replay outnumbers the project early on, and P(project) must not start near 0.
    w = np.where(y == 1, len(y) / (2 * len(own)), len(y) / (2 * len(old)))
    tr, te = train_test_split(np.arange(len(y)), test_size=0.25, random_state=seed, stratify=y)
    probe = _domain_model(runtime)
    probe.fit(list(texts[tr]), y[tr], w[tr])
    auc = float(roc_auc_score(y[te], probe.predict_proba(list(texts[te]))[:, 1]))
    info["auc"] = round(auc, 4)
    if auc < float(anchor["min_auc"]):
        info["reason"] = f"held-out AUC {auc:.3f} < {anchor['min_auc']}: the project's texts look like the source's"
        return info
    model = _domain_model(runtime)
    model.fit(list(texts), y, w)
    info.update(active=True, domain_version=model.save(path), reason=f"held-out AUC {auc:.3f}")
    log.info("domain router on: AUC %.3f on %d held-out texts", auc, len(te))
    return info
