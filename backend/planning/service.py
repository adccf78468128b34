"""Plans at /setup: a control nothing serves gets a plan (PLAN_ON_SETUP=auto) or the plan written for it by
`autoannotator plan` (auto or explicit), and the plan's pretrained specialists become a zero-shot bundle.

Label Studio waits 3 s for /setup (ML_TIMEOUT_SETUP) and calls it on most page views, so /setup only starts the
work: planning (an LLM call, availability checks) and building (loading checkpoints) run in a background thread,
one per plan key across the processes of a deployment (a lock file in MODEL_DIR/plans). The next /setup after the
bundle is promoted returns its version. Imports no torch: `apply` is imported inside the thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from backend.labelstudio.config import ChoiceControl, project_bundle_key
from backend.planning.plan import Plan, PlanStore

log = logging.getLogger(__name__)

MODES = ("auto", "explicit", "off")


def plan_key(project_id: str | None, control: ChoiceControl) -> str:
    """A project's own key when the project is known, else the label set's (shared by every such project)."""
    if project_id and project_id != "unknown":
        return project_bundle_key(project_id, control.name)
    return control.bundle_key


def should_start(mode: str, plan: Plan | None) -> bool:
    """For a control nothing serves: plan it (auto, no plan yet) or apply its plan (not applied yet)."""
    if mode not in ("auto", "explicit"):
        return False
    if plan is None:
        return mode == "auto"
    return not plan.applied


class SetupPlanner:
    def __init__(self, settings: Any):
        self.settings = settings
        self.plans = PlanStore(settings.model_dir)
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self._settled: set[str] = set()  # keys whose plan is applied (or tried): no file read at each /setup

    @property
    def mode(self) -> str:
        mode = str(self.settings.plan_on_setup).strip().lower()
        return mode if mode in MODES else "auto"

    def on_setup(self, project_id: str | None, unserved: list[ChoiceControl]) -> list[str]:
        """Start planning or applying for the controls nothing serves; returns the controls being worked on."""
        if self.mode == "off" or not unserved:
            return []
        started = []
        for control in unserved:
            key = plan_key(project_id, control)
            if key in self._settled:
                continue
            with self._lock:
                thread = self._running.get(key)
                if thread is not None and thread.is_alive():
                    started.append(control.name)
                    continue
                plan = self.plans.for_control(project_id, control)
                if not should_start(self.mode, plan):
                    if plan is not None:
                        self._settled.add(key)
                    continue
                thread = threading.Thread(target=self._run, args=(project_id, control, key), daemon=True,
                                          name=f"plan-{key}"[:60])
                self._running[key] = thread
                thread.start()
                started.append(control.name)
        return started

    def wait(self, timeout: float | None = None) -> None:
        """Join the running planners (tests, shutdown)."""
        for thread in list(self._running.values()):
            thread.join(timeout)

    def _run(self, project_id: str | None, control: ChoiceControl, key: str) -> None:
        if not self.plans.try_lock(key):
            return  # another process works on it
        plan = None
        try:
            plan = self.plans.for_control(project_id, control)
            if plan is None:
                if self.mode != "auto":
                    return
                from backend.planning.planner import make_plan

                plan = make_plan(control, key, self.settings)
                self.plans.save(plan)
                log.info("planned %s (%s): %s", key, plan.source, [s["name"] for s in plan.specialists])
            if not plan.applied:
                from backend.planning.apply import build_zero_shot
                from backend.serving.bundles import BundleStore

                build_zero_shot(plan, BundleStore(self.settings.model_dir), **self.settings.runtime)
                self.plans.save(plan)
            self._settled.add(key)
        except Exception as exc:
            log.exception("planning %s failed", key)
            if plan is not None:  # recorded, so that every later /setup does not try again: re-plan with the CLI
                plan.applied = {"bundle": None, "error": f"{type(exc).__name__}: {exc}"}
                self.plans.save(plan)
            self._settled.add(key)
        finally:
            self.plans.unlock(key)
