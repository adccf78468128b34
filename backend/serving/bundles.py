"""Versioned specialist bundles on disk: what `train` writes and the server serves.

A bundle is every specialist trained for one label set, plus how to combine them (weights,
temperature) and the metrics measured when it was built. Layout:

    MODEL_DIR/bundles/<key>/versions/<version>/manifest.json
    MODEL_DIR/bundles/<key>/versions/<version>/specialists/<name>/...
    MODEL_DIR/bundles/<key>/CURRENT            the served version, swapped atomically

Versions are written to a temporary directory and renamed into place, so a reader never sees a
half-written bundle, and promotion is a single `os.replace` of CURRENT.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


@dataclass
class SpecialistEntry:
    name: str
    family: str
    version: str
    weight: float = 1.0


@dataclass
class Manifest:
    key: str
    labels: list[str]
    multiple: bool
    specialists: list[SpecialistEntry]
    temperature: float = 1.0
    threshold: float = 0.5
    # A split temperature (older bundles): the one of the tasks every specialist answers alike (`temperature` is then
    # the others'); None: one temperature for all, as every bundle built before it.
    unanimous_temperature: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # where the training data came from
    # The domain router (backend/specialists/domain.py): the bundle the project started from, and whether a domain model
    # hands it the tasks unlike the project's. Empty for shared bundles and for bundles built before the gate.
    anchor: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    version: str = ""

    @property
    def vote_weights(self) -> dict[str, float]:
        """Each specialist's voting weight by name: fitted on held-out rows or the recipe's."""
        return {s.name: s.weight for s in self.specialists}

    def compute_version(self) -> str:
        """Derived from the specialists' versions and how they are combined: same parts, same version."""
        parts = {
            "labels": self.labels,
            "multiple": self.multiple,
            "specialists": sorted((s.name, s.version, round(s.weight, 6)) for s in self.specialists),
            "temperature": round(self.temperature, 6),
            "threshold": self.threshold,
        }
        if self.unanimous_temperature is not None:
            parts["unanimous_temperature"] = round(self.unanimous_temperature, 6)
        if self.anchor.get("active"):
            parts["anchor"] = [self.anchor["key"], self.anchor["version"], self.anchor["domain_version"],
                               self.anchor["mode"], self.anchor.get("cutoff", 0.5)]
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
        return f"aa-{digest[:10]}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        d = dict(d)
        d["specialists"] = [SpecialistEntry(**s) for s in d["specialists"]]
        return cls(**d)


@dataclass(frozen=True)
class BundleRef:
    key: str
    version: str
    path: Path


class BundleStore:
    def __init__(self, model_dir: Path):
        self.root = Path(model_dir) / "bundles"

    def ref(self, key: str, version: str) -> BundleRef | None:
        """A stored version, served or not (an anchor is pinned by version); None if it is gone."""
        path = self._key_dir(key) / "versions" / version
        return BundleRef(key, version, path) if (path / MANIFEST).exists() else None

    def _key_dir(self, key: str) -> Path:
        return self.root / key

    def new_workdir(self, key: str) -> Path:
        """A scratch directory on the same filesystem, so that `commit` can rename it into place."""
        d = self._key_dir(key)
        d.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".building-", dir=d))

    def commit(self, workdir: Path, manifest: Manifest, promote: bool = True) -> BundleRef:
        manifest.version = manifest.compute_version()
        (workdir / MANIFEST).write_text(manifest.to_json())
        final = self._key_dir(manifest.key) / "versions" / manifest.version
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # identical parts: keep the existing copy
            shutil.rmtree(workdir)
        else:
            os.rename(workdir, final)
        if promote:
            self.promote(manifest.key, manifest.version)
        return BundleRef(manifest.key, manifest.version, final)

    def promote(self, key: str, version: str, action: str = "promote", **note: Any) -> None:
        if not (self._key_dir(key) / "versions" / version / MANIFEST).exists():
            raise FileNotFoundError(f"bundle {key}/{version} does not exist")
        fd, tmp = tempfile.mkstemp(dir=self._key_dir(key), prefix=".current-")
        with os.fdopen(fd, "w") as fh:
            fh.write(version)
        os.replace(tmp, self._key_dir(key) / "CURRENT")
        self._log(key, {"version": version, "action": action, **note})

    def _log(self, key: str, entry: dict[str, Any]) -> None:
        with (self._key_dir(key) / "HISTORY").open("a") as fh:
            fh.write(json.dumps({**entry, "at": time.time()}) + "\n")

    def history(self, key: str) -> list[dict[str, Any]]:
        path = self._key_dir(key) / "HISTORY"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def rollback(self, key: str) -> str | None:
        """Serve the version promoted before the current one; with none, stop serving this key (a
        project bundle then falls back to the shared bundle of its label set). Returns what serves now."""
        current = self.current(key)
        if current is None:
            raise FileNotFoundError(f"nothing is served for {key}: no rollback possible")
        history = self.history(key)
        rolled_back = {e["from"] for e in history if e["action"] == "rollback" and "from" in e} | {current.version}
        earlier = [e["version"] for e in history if e["action"] == "promote" and e["version"] not in rolled_back]
        if earlier:
            self.promote(key, earlier[-1], action="rollback", **{"from": current.version})
            return earlier[-1]
        os.remove(self._key_dir(key) / "CURRENT")
        self._log(key, {"version": None, "action": "rollback", "from": current.version})
        return None

    def current(self, key: str) -> BundleRef | None:
        try:
            version = (self._key_dir(key) / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return None
        return self.ref(key, version)

    def manifest(self, ref: BundleRef) -> Manifest:
        return Manifest.from_dict(json.loads((ref.path / MANIFEST).read_text()))

    def keys(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, key: str) -> list[str]:
        """Versions of a key, newest first."""
        d = self._key_dir(key) / "versions"
        if not d.exists():
            return []
        found = [p for p in d.iterdir() if (p / MANIFEST).exists()]
        return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]
