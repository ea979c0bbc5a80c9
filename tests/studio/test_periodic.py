"""The app's background chores (retention purges, snapshots, pushes) keep their schedule."""

from __future__ import annotations

import threading

from studio.periodic import Periodic


def test_a_periodic_task_keeps_running_after_a_failure():
    runs = []
    done = threading.Event()

    def task():
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("first run fails")
        done.set()

    periodic = Periodic(task, hours=0.01 / 3600, name="test-task").start()
    try:
        assert done.wait(timeout=30), "the task stopped after its first failure"
    finally:
        periodic.stop()
    assert len(runs) >= 2
