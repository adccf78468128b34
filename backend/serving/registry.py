"""Which bundle serves which control, and the loaded ensembles, shared by every thread of a process.

Resolution reads the bundle store's CURRENT pointers at most every `bundle_refresh_seconds`, so a
version promoted by `train` (or the retrainer) is picked up without a restart. Ensembles are
loaded once per (key, version); loading happens outside the request that asked only for a version
(/setup warms in the background) so /setup stays cheap.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
from typing import TYPE_CHECKING

from backend.labelstudio.config import ChoiceControl, LabelSpace, normalise_label, project_bundle_key
from backend.serving.bundles import BundleRef, BundleStore
from backend.settings import Settings

if TYPE_CHECKING:  # the ensemble module pulls in the specialists; keep it off the HTTP import path
    from backend.serving.ensemble import Ensemble

log = logging.getLogger(__name__)

UNTRAINED_VERSION = "autoannotator-untrained"


def combined_version(refs: list[BundleRef]) -> str:
    """The model_version of a prediction built from one bundle per control."""
    if not refs:
        return UNTRAINED_VERSION
    if len(refs) == 1:
        return refs[0].version
    digest = hashlib.sha256("|".join(sorted(f"{r.key}={r.version}" for r in refs)).encode()).hexdigest()
    return f"aa-{digest[:10]}"


def _settle_heap() -> None:
    """Take what the loaded models hold out of the cyclic garbage collector's way.

    A loaded bundle is half a million long-lived Python objects; each full collection walked them all (0.2 s on 2
    cores) inside whichever request crossed the threshold. Frozen objects are skipped; the ones frozen at the last
    load are given back first, so a replaced bundle's cycles are still collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelRegistry:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = BundleStore(settings.model_dir)
        self._current: dict[str, tuple[float, BundleRef | None]] = {}
        self._ensembles: dict[tuple[str, str], Ensemble] = {}
        self._labels: dict[tuple[str, str], list[str]] = {}
        self._keys: tuple[float, list[str]] | None = None
        self._load_lock = threading.Lock()
        self.loads = 0

    def current(self, key: str) -> BundleRef | None:
        now = time.monotonic()
        cached = self._current.get(key)
        if cached is None or now - cached[0] > self.settings.bundle_refresh_seconds:
            cached = (now, self.store.current(key))
            self._current[key] = cached
        return cached[1]

    def resolve(self, space: LabelSpace, project_id: str | None = None) -> list[tuple[ChoiceControl, BundleRef | None]]:
        """Per control: the project's own bundle if it has one, else the shared one for its label set."""
        out = []
        for c in space.controls:
            ref = self.current(project_bundle_key(project_id, c.name)) if project_id else None
            out.append((c, ref or self.current(c.bundle_key) or self._closest_shared(c)))
        return out

    def served(self, space: LabelSpace, project_id: str | None = None) -> list[tuple[ChoiceControl, BundleRef | None]]:
        """`resolve`, where a bundle that shares fewer than two labels with its control does not count."""
        return [(c, ref if ref is not None and self.columns(ref, c) else None)
                for c, ref in self.resolve(space, project_id)]

    def _closest_shared(self, control: ChoiceControl) -> BundleRef | None:
        """A shared bundle of the same mode sharing the most labels (at least two) with the control:
        adding or removing one choice must not leave a project without predictions."""
        now = time.monotonic()
        if self._keys is None or now - self._keys[0] > max(self.settings.bundle_refresh_seconds, 1.0):
            self._keys = (now, [k for k in self.store.keys() if not k.startswith("project-")])
        mode = control.bundle_key.split("__")[0]
        wanted = {normalise_label(x) for x in control.labels}
        best: tuple[int, str] | None = None
        for key in self._keys[1]:
            if not key.startswith(mode + "__"):
                continue
            overlap = len(wanted & set(key.split("__", 1)[1].split("_")))
            if overlap >= 2 and (best is None or overlap > best[0]):
                best = (overlap, key)
        return self.current(best[1]) if best else None

    def columns(self, ref: BundleRef, control: ChoiceControl) -> list[tuple[int, str]] | None:
        """(bundle label index, control label) for the labels both know; None if fewer than two.

        A project bundle trained before its config changed still serves: a removed choice is
        never predicted, a new one waits for the next training stage.
        """
        labels = self.labels_of(ref)
        index = {normalise_label(x): i for i, x in enumerate(labels)}
        pairs = [(index[normalise_label(x)], x) for x in control.labels if normalise_label(x) in index]
        return pairs if len(pairs) >= 2 else None

    def labels_of(self, ref: BundleRef) -> list[str]:
        key = (ref.key, ref.version)
        if key not in self._labels:
            self._labels[key] = self.store.manifest(ref).labels
        return self._labels[key]

    def ensemble(self, ref: BundleRef) -> Ensemble:
        key = (ref.key, ref.version)
        ens = self._ensembles.get(key)
        if ens is not None:
            return ens
        with self._load_lock:
            ens = self._ensembles.get(key)
            if ens is None:
                from backend.serving.ensemble import load_ensemble

                t0 = time.perf_counter()
                ens = load_ensemble(ref, self.store.manifest(ref), **self.settings.runtime)
                # Touch every specialist once so lazy weights and kernels are ready before traffic.
                ens.predict(["warm up"])
                for old in [k for k in self._ensembles if k[0] == ref.key]:
                    del self._ensembles[old]  # a promoted version replaces the one it succeeds
                self._ensembles[key] = ens
                _settle_heap()
                self.loads += 1
                log.info("loaded bundle %s/%s in %.1fs", ref.key, ref.version, time.perf_counter() - t0)
        return ens

    def warm(self, refs: list[BundleRef]) -> None:
        """Load in a background thread what is not loaded yet; errors are logged, not raised."""
        missing = [r for r in refs if (r.key, r.version) not in self._ensembles]
        if not missing:
            return

        def run() -> None:
            for r in missing:
                try:
                    self.ensemble(r)
                except Exception:
                    log.exception("warming bundle %s/%s failed", r.key, r.version)

        threading.Thread(target=run, name="warm-bundles", daemon=True).start()

    def loaded(self) -> list[str]:
        return [f"{k}/{v}" for k, v in self._ensembles]
