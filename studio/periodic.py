"""Run one of the app's chores every N hours in a daemon thread (snapshots, retention purges,
export pushes).

`Periodic(task, hours, name).start()` calls `task()` after each interval until `stop()`;
`wake()` runs it at once instead (an erasure pushes the exports again, say), and the next
interval counts from there. A failing run is logged with its traceback and the next one still
happens.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Periodic:
    def __init__(self, task: Callable[[], object], hours: float, name: str) -> None:
        self.task = task
        self.name = name
        self.interval_s = hours * 3600
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def wake(self, *_: object) -> None:
        """Run the task now (in its own thread), then keep the schedule from there."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _run(self) -> None:
        while True:
            # A wake during a run is kept and runs the task again: an erasure in the middle
            # of a push may have come after that push read its data.
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.task()
            except Exception:  # one failed run must not stop later ones, nor the app
                log.exception("%s failed", self.name)
