"""A plan: which specialists serve one control of a project, how each checkpoint's labels map onto its
choices, and why — plus what was left out and why.

`specialists` has the same dict form as `finetune.training.DEFAULT_SPECIALISTS` ({name, family, params,
weight}, with `reason` and `catalog` kept alongside), so a plan is directly a training recipe. Plans live
in MODEL_DIR/plans/<bundle key>.json: the project's own key (project-<id>__<control>) or, for a plan
made without a project, the label-set key shared by every project with those choices.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

PlanSource = Literal["llm", "matcher"]


@dataclass
class Plan:
    key: str  # the bundle key this plan builds (project or label-set key)
    control: str
    labels: list[str]
    multiple: bool
    specialists: list[dict[str, Any]]  # {name, family, params{checkpoint, label_map, ...}, weight, reason, catalog}
    source: PlanSource = "matcher"
    reason: str = ""  # the plan as a whole: the LLM's summary or the matcher's
    dropped: list[dict[str, str]] = field(default_factory=list)  # {name, checkpoint, reason}
    notes: list[str] = field(default_factory=list)  # fallbacks taken, availability messages, LLM problems
    language: str = ""
    llm: dict[str, Any] = field(default_factory=dict)  # model, tokens, raw answer
    checked: dict[str, Any] = field(default_factory=dict)  # accuracy check on human annotations, once done
    applied: dict[str, Any] = field(default_factory=dict)  # the zero-shot bundle built from it, if any
    created_at: float = field(default_factory=time.time)

    @property
    def mappings(self) -> dict[str, dict[str, str]]:
        """Specialist name → {checkpoint label: project choice}, for the pretrained ones."""
        return {s["name"]: dict(s["params"].get("label_map") or {}) for s in self.specialists if s["family"] == "hf"}

    @property
    def reasons(self) -> dict[str, str]:
        return {s["name"]: s.get("reason", "") for s in self.specialists}

    def recipe(self) -> list[dict[str, Any]]:
        """The specialists as `train_bundle` takes them."""
        return [{"name": s["name"], "family": s["family"], "params": dict(s.get("params") or {}),
                 "weight": float(s.get("weight", 1.0))} for s in self.specialists]

    def pretrained(self) -> list[dict[str, Any]]:
        """Specialists that label before any annotation exists (a checkpoint whose labels cover every choice)."""
        return [s for s in self.specialists if s["family"] == "hf"]

    def drop(self, name: str, reason: str) -> None:
        spec = next((s for s in self.specialists if s["name"] == name), None)
        if spec is None:
            return
        self.specialists.remove(spec)
        self.dropped.append({"name": name, "checkpoint": str(spec["params"].get("checkpoint", "")), "reason": reason})

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls.from_dict(json.loads(text))

    def summary(self) -> str:
        """What `autoannotator plan` prints: the ensemble, the mappings, the reasons, what was dropped."""
        lines = [f"plan for control {self.control!r} {self.labels} ({'multiple' if self.multiple else 'single'} "
                 f"choice) → {self.key}  [source: {self.source}]"]
        if self.reason:
            lines.append(f"  why: {self.reason}")
        for s in self.specialists:
            where = s["params"].get("checkpoint", "")
            family = f"{s['family']}, {where}" if where else s["family"]
            lines.append(f"  + {s['name']} ({family}), weight {s.get('weight', 1.0)}")
            label_map = s["params"].get("label_map")
            if label_map:
                lines.append("      " + ", ".join(f"{k} → {v}" for k, v in label_map.items()))
            if s.get("reason"):
                lines.append(f"      {s['reason']}")
        from backend.planning.availability import how_to_make_available

        unavailable = 0
        for d in self.dropped:
            where = d.get("checkpoint", "")
            reason, how = d["reason"], how_to_make_available(where)
            if where and reason.endswith(how):  # said once below, not once per checkpoint
                reason, unavailable = reason[: -len(how)].rstrip(), unavailable + 1
            lines.append(f"  - {d['name']}{f' ({where})' if where and where != d['name'] else ''}: {reason}")
        lines.extend(f"  note: {n}" for n in self.notes)
        if unavailable:
            lines.append("  " + how_to_make_available("<id>"))
        return "\n".join(lines)


class PlanStore:
    """MODEL_DIR/plans/<key>.json, written atomically (a reader never sees half a plan)."""

    def __init__(self, model_dir: str | Path):
        self.root = Path(model_dir) / "plans"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> Plan | None:
        try:
            return Plan.from_json(self.path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def save(self, plan: Plan) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".plan-")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(plan.to_json())
        os.replace(tmp, self.path(plan.key))
        return self.path(plan.key)

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.exists() else []

    def for_control(self, project_id: str | None, control: Any) -> Plan | None:
        """The project's own plan for a control, else the plan for its label set."""
        from backend.labelstudio.config import project_bundle_key

        if project_id:
            plan = self.get(project_bundle_key(project_id, control.name))
            if plan is not None:
                return plan
        return self.get(control.bundle_key)

    def try_lock(self, key: str, stale_seconds: float = 600.0) -> bool:
        """One planner per key across the processes of a deployment; a lock older than `stale_seconds` is taken
        over (its owner died)."""
        self.root.mkdir(parents=True, exist_ok=True)
        lock = self.root / f".{key}.lock"
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime < stale_seconds:
                    return False
                lock.unlink()
            except FileNotFoundError:
                pass
            return self.try_lock(key, stale_seconds)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True

    def unlock(self, key: str) -> None:
        try:
            (self.root / f".{key}.lock").unlink()
        except FileNotFoundError:
            pass


def merge_recipe(served: list[dict[str, Any]] | None, plan: Plan) -> list[dict[str, Any]]:
    """What a training stage trains: the served bundle's specialists less those the plan dropped, plus the planned
    ones not served yet (a zero-shot bundle holds only the pretrained ones); with nothing served, the plan."""
    if served is None:
        return plan.recipe()
    dropped = {d["name"] for d in plan.dropped}
    out = [dict(s) for s in served if s["name"] not in dropped]
    names = {s["name"] for s in out}
    return out + [s for s in plan.recipe() if s["name"] not in names]
