"""Limits that keep one visitor from exhausting the server or guessing its admin password.

- `PasswordGate` checks admin-password guesses in constant time and logs every wrong one with
  the client's address. A client gets `free_guesses` wrong guesses, then waits before each next
  one, twice as long each time (up to `max_wait_s`); and when all clients together guess wrong
  `global_failures` times within `global_window_s`, every guess is refused until the oldest of
  those failures is that old, so spreading guesses over many addresses gains nothing.
- `UploadGuard` is an ASGI middleware in front of Gradio's upload route. It refuses an upload
  with a plain message when the disk holding the upload folder would have less than
  `min_free_bytes` left (before the disk fills, not after), and when one client has uploaded
  more than `per_client_bytes` within `window_s`.

A client is its address as the server sees it, or the first X-Forwarded-For entry when the
app sits behind a proxy (a Space). That header can be forged; the overall password limit
holds whatever it says. Both take a clock, so tests can move time instead of waiting.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import shutil
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ui.uploads import is_upload

log = logging.getLogger(__name__)

# Bounds the memory the limits themselves use: the least recently seen clients are forgotten.
MAX_CLIENTS = 10_000


def client_address(headers, host: str | None) -> str:
    forwarded = headers.get("x-forwarded-for") if headers is not None else None
    if forwarded:
        return forwarded.split(",")[0].strip() or "unknown"
    return host or "unknown"


@dataclass
class _Guesses:
    failures: int = 0
    next_allowed: float = 0.0


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str = ""


class PasswordGate:
    def __init__(self, password: str, *, free_guesses: int = 3, first_wait_s: float = 2.0,
                 max_wait_s: float = 900.0, global_failures: int = 50,
                 global_window_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._digest = hashlib.sha256(password.encode()).digest()
        self.free_guesses = free_guesses
        self.first_wait_s = first_wait_s
        self.max_wait_s = max_wait_s
        self.global_failures = global_failures
        self.global_window_s = global_window_s
        self._clock = clock
        self._clients: OrderedDict[str, _Guesses] = OrderedDict()
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()

    def attempt(self, client: str, given: str) -> Verdict:
        now = self._clock()
        with self._lock:
            while self._recent and now - self._recent[0] >= self.global_window_s:
                self._recent.popleft()
            guesses = self._clients.pop(client, None) or _Guesses()
            self._clients[client] = guesses
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
            if len(self._recent) >= self.global_failures:
                wait = self.global_window_s - (now - self._recent[0])
                log.warning("admin password refused for %s: too many wrong guesses overall",
                            client)
                return Verdict(False, "Too many wrong passwords have been tried; the data tab "
                                      f"is locked for {_duration(wait)}.")
            if now < guesses.next_allowed:
                log.warning("admin password refused for %s: waiting after %d wrong guesses",
                            client, guesses.failures)
                return Verdict(False, "Too many wrong passwords from here; try again in "
                                      f"{_duration(guesses.next_allowed - now)}.")
            # Digests of equal length, compared in constant time: the time taken says
            # nothing about how much of a guess was right, nor about the password's length.
            right = hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._digest)
            if right:
                guesses.failures, guesses.next_allowed = 0, 0.0
                return Verdict(True)
            guesses.failures += 1
            self._recent.append(now)
            over = guesses.failures - self.free_guesses
            if over >= 0:
                guesses.next_allowed = now + min(self.max_wait_s,
                                                 self.first_wait_s * 2 ** over)
            log.warning("wrong admin password from %s (%d wrong guesses)", client,
                        guesses.failures)
            return Verdict(False, "Wrong password.")


class UploadGuard:
    def __init__(self, app, *, folder: str, min_free_bytes: int, per_client_bytes: int,
                 window_s: float = 3600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.folder = folder
        self.min_free_bytes = min_free_bytes
        self.per_client_bytes = per_client_bytes
        self.window_s = window_s
        self._clock = clock
        self._uploads: OrderedDict[str, deque[tuple[float, int]]] = OrderedDict()
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if not is_upload(scope):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        client = client_address(headers, (scope.get("client") or (None,))[0])
        try:
            size = int(headers.get("content-length", ""))
        except ValueError:
            await _refuse(send, 411, "Uploads must say how large they are.")
            return
        refusal = self._check(client, size)
        if refusal:
            log.warning("upload of %d bytes from %s refused: %s", size, client, refusal)
            await _refuse(send, 507 if "disk space" in refusal else 429, refusal)
            return
        await self.app(scope, receive, send)

    def _check(self, client: str, size: int) -> str | None:
        free = _free_bytes(Path(self.folder))
        if free is not None and free - size < self.min_free_bytes:
            return ("The server is nearly out of disk space, so it takes no uploads for now. "
                    "Nothing was saved; please try again later.")
        if not self.per_client_bytes:
            return None
        now = self._clock()
        with self._lock:
            recent = self._uploads.pop(client, None) or deque()
            self._uploads[client] = recent
            while len(self._uploads) > MAX_CLIENTS:
                self._uploads.popitem(last=False)
            while recent and now - recent[0][0] >= self.window_s:
                recent.popleft()
            used = sum(count for _, count in recent)
            if used + size > self.per_client_bytes:
                wait = self.window_s - (now - recent[0][0]) if recent else self.window_s
                return (f"You have uploaded {used / 2**20:.0f} MB recently, the most one "
                        f"visitor may; please try again in {_duration(wait)}.")
            recent.append((now, size))
        return None


def _free_bytes(folder: Path) -> int | None:
    """Free bytes on the disk that holds `folder` (or would: it is made on the first upload)."""
    for place in (folder, *folder.parents):
        if place.exists():
            try:
                return shutil.disk_usage(place).free
            except OSError:
                return None
    return None


async def _refuse(send, status: int, message: str) -> None:
    body = message.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _duration(seconds: float) -> str:
    seconds = max(1, round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    return f"{round(seconds / 60)} min"
