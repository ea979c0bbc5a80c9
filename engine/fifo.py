"""First come, first served access to the one model in this process.

`FifoLock.hold(ticket)` is granted in arrival order. Waiters can be counted (`position`), give
up (their ticket's `cancelled` event), and are bounded: one more than `max_waiting` is refused
with EngineBusy. `has_waiters()` lets a holder that could go on forever (the batch scheduler,
which keeps admitting new requests) step aside for whoever is waiting.

Knows nothing of models, the UI or the database.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field

from engine.errors import EngineBusy


@dataclass
class Ticket:
    request_id: str
    cancelled: threading.Event = field(default_factory=threading.Event)


def busy_error(waiting: int) -> EngineBusy:
    return EngineBusy(f"The model is busy: {waiting} requests are already waiting. "
                      "Please try again in a minute.")


class FifoLock:
    """A lock granted in arrival order, whose waiters can be counted, cancelled and bounded."""

    def __init__(self, max_waiting: int) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[Ticket] = deque()
        self._holder: Ticket | None = None
        self.max_waiting = max_waiting

    def position(self, request_id: str) -> int | None:
        """0 while running, 1.. while waiting (1 = next), None when unknown."""
        with self._cond:
            if self._holder is not None and self._holder.request_id == request_id:
                return 0
            for index, ticket in enumerate(self._waiting):
                if ticket.request_id == request_id:
                    return index + 1
        return None

    def has_waiters(self) -> bool:
        with self._cond:
            return bool(self._waiting)

    @contextmanager
    def hold(self, ticket: Ticket, *, bounded: bool = True):
        """Yield True once `ticket` holds the lock, or False if it was cancelled first."""
        with self._cond:
            if bounded and self.max_waiting and len(self._waiting) >= self.max_waiting:
                raise busy_error(len(self._waiting))
            self._waiting.append(ticket)
            while self._holder is not None or self._waiting[0] is not ticket:
                if ticket.cancelled.is_set():
                    break
                self._cond.wait(timeout=0.1)
            self._waiting.remove(ticket)
            acquired = not ticket.cancelled.is_set()
            if acquired:
                self._holder = ticket
            self._cond.notify_all()
        try:
            yield acquired
        finally:
            if acquired:
                with self._cond:
                    self._holder = None
                    self._cond.notify_all()
