"""Waiting for something another thread or process makes true, without guessing how long.

`wait_until(condition, timeout)` checks `condition()` until it holds and returns True, or
returns False at the timeout; the timeout is a generous bound on a hang, never a figure a test
asserts. Where the code under test offers an event, wait on that event instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_TIMEOUT_S = 60.0
# Short enough that a test does not wait noticeably after the condition holds.
CHECK_EVERY_S = 0.01


def wait_until(condition: Callable[[], object], timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(CHECK_EVERY_S)
    return True
