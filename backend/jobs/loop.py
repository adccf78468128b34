"""The one background loop of a server process.

Each turn runs the process's chores in order — replaying stored webhook events, sending or running training
stages, sending or running LLM review batches — then sleeps until woken (a webhook asked for a stage, /predict
asked for a review) or until DISPATCH_SECONDS pass. A chore returns True when it did work, and the loop turns
again at once. Threads do not survive gunicorn's fork: the owner checks `pid` and starts a new loop in a child.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)

Chore = Callable[[], bool]


class Background(threading.Thread):
    def __init__(self, chores: Sequence[tuple[str, Chore]], interval: float):
        super().__init__(name="autoannotator-background", daemon=True)
        self.chores = list(chores)
        self.interval = interval
        self.wake = threading.Event()
        self.stopped = threading.Event()
        self.pid = os.getpid()

    def turn(self) -> bool:
        busy = False
        for name, chore in self.chores:
            try:
                busy = bool(chore()) or busy
            except Exception:
                log.exception("background chore %s failed", name)
        return busy

    def run(self) -> None:
        while not self.stopped.is_set():
            if self.turn():
                continue
            self.wake.wait(self.interval)
            self.wake.clear()

    def stop(self) -> None:
        self.stopped.set()
        self.wake.set()
