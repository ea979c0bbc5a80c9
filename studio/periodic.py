"""Run one of the app's chores every N hours in a daemon thread (snapshots, retention purges,
export pushes).

`Periodic(task, hours, name).start()` calls `task()` after each interval until `stop()`;
a failing run is logged with its traceback and the next one still happens.
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
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.task()
            except Exception:  # one failed run must not stop later ones, nor the app
                log.exception("%s failed", self.name)
