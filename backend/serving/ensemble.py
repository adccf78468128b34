"""A loaded bundle: its specialists, each run once per batch, combined by the pure voting rules.

A project bundle with an active domain router also loads its anchor (the bundle the project started from) and its
domain model; each task is then decided by the side the gate gives it to (backend/decision/mixing.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from backend.decision.mixing import mix, project_share
from backend.decision.voting import Decision, decide, restrict
from backend.labelstudio.config import normalise_label
from backend.serving.bundles import BundleRef, BundleStore, Manifest
from backend.specialists import registry
from backend.specialists.base import Specialist

log = logging.getLogger(__name__)

_PARALLEL_FROM = 64  # tasks in a batch from which the specialists run side by side


class Ensemble:
    def __init__(self, manifest: Manifest, specialists: Sequence[Specialist], anchor: Ensemble | None = None,
                 domain: Specialist | None = None):
        self.manifest = manifest
        self.specialists = list(specialists)
        self.weights = [e.weight for e in manifest.specialists]
        self.anchor = anchor if domain is not None else None
        self.domain = domain
        # The anchor's column for each of this bundle's labels (the two may list them in another order).
        self._anchor_cols: list[int] = []
        if self.anchor is not None:
            index = {normalise_label(x): j for j, x in enumerate(self.anchor.labels)}
            self._anchor_cols = [index[normalise_label(x)] for x in self.labels]

    @property
    def version(self) -> str:
        return self.manifest.version

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def routed(self) -> bool:
        return self.anchor is not None

    def probabilities(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each specialist's (n, k) probabilities: one batched pass per specialist, side by side on a large batch
        (torch, numpy and SQLite release the GIL, so an encoder pass overlaps the TF-IDF analyzers)."""
        if len(texts) < _PARALLEL_FROM or len(self.specialists) < 2:
            return [s.predict_proba(texts) for s in self.specialists]
        with ThreadPoolExecutor(max_workers=len(self.specialists), thread_name_prefix="specialist") as pool:
            return list(pool.map(lambda s: s.predict_proba(texts), self.specialists))

    def project_share(self, texts: Sequence[str]) -> np.ndarray:
        """Per task, the weight of this bundle's own specialists (1 everywhere without a gate)."""
        if self.domain is None:
            return np.ones(len(texts))
        info = self.manifest.anchor
        return project_share(self.domain.predict_proba(texts)[:, 1], info.get("mode", "hard"), info.get("cutoff", 0.5))

    def anchor_decisions(self, texts: Sequence[str], columns: Sequence[int] | None = None) -> list[Decision]:
        """The anchor's decisions over this bundle's labels (all, or `columns`); only for a gated bundle."""
        cols = list(range(len(self.labels))) if columns is None else list(columns)
        return self.anchor.decisions(texts, columns=[self._anchor_cols[c] for c in cols])

    def decisions(self, texts: Sequence[str], probas: Sequence[np.ndarray] | None = None,
                  columns: Sequence[int] | None = None, share: np.ndarray | None = None,
                  anchor: Sequence[Decision] | None = None) -> list[Decision]:
        """Decisions over all labels, or over `columns` only; `probas` (this bundle's own), `share`
        (`project_share`) and `anchor` (`anchor_decisions`) are passed by a caller that already has them."""
        if not texts:
            return []
        m = self.manifest
        probas = self.probabilities(texts) if probas is None else probas
        cols = list(range(len(self.labels))) if columns is None else list(columns)
        if cols != list(range(len(self.labels))):
            probas = restrict(probas, cols, m.multiple)
        own = decide(probas, self.weights, m.temperature, m.multiple, m.threshold, m.unanimous_temperature)
        if self.anchor is None:
            return own
        share = self.project_share(texts) if share is None else share
        anchor = self.anchor_decisions(texts, cols) if anchor is None else anchor
        return mix(own, anchor, share, m.multiple, m.threshold)

    def predict(self, texts: Sequence[str], columns: Sequence[int] | None = None) -> list[Decision]:
        """Decisions over all labels, or over `columns` only (label indices into the decision's labels)."""
        return self.decisions(texts, columns=columns)


def load_ensemble(ref: BundleRef, manifest: Manifest, **runtime: Any) -> Ensemble:
    specialists = [registry.load(Path(ref.path) / "specialists" / e.name, **runtime) for e in manifest.specialists]
    anchor = domain = None
    info = manifest.anchor
    if info.get("active"):
        store = BundleStore(Path(ref.path).parents[3])
        anchor_ref = store.ref(info["key"], info["version"])
        if anchor_ref is None:
            log.warning("bundle %s: its anchor %s/%s is gone; serving without the domain router", ref.version,
                        info["key"], info["version"])
        else:
            anchor_manifest = store.manifest(anchor_ref)
            known = {normalise_label(x) for x in anchor_manifest.labels}
            if all(normalise_label(x) in known for x in manifest.labels):
                anchor = load_ensemble(anchor_ref, anchor_manifest, **runtime)
                domain = registry.load(Path(ref.path) / "domain", **runtime)
            else:
                log.warning("bundle %s: its anchor %s lacks some of its labels; serving without the domain router",
                            ref.version, info["version"])
    return Ensemble(manifest, specialists, anchor, domain)
