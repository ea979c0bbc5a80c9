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


def test_a_woken_task_runs_at_once_and_a_stopped_one_never_again():
    runs = []
    ran = threading.Event()

    def task():
        runs.append(1)
        ran.set()

    periodic = Periodic(task, hours=1000, name="test-wake").start()
    periodic.wake()
    assert ran.wait(timeout=30), "wake() did not run the task"
    periodic.stop()
    periodic._thread.join(timeout=30)
    assert not periodic._thread.is_alive() and runs == [1]
