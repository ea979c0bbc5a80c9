"""The local engine in a process of its own, so the model never shares an interpreter with the web
server.

`ProcessEngine` implements `engine.protocol.Engine` by running an `engine.local.LocalEngine`
in a child Python process (`python -m engine.process FD`): `load()` starts it and waits for the
model, `close()` stops it. Decoding, batching, thinking budgets, adapters, scoring and
out-of-memory recovery are the local engine's own, unchanged; this module only carries
requests and events across one duplex pipe (`multiprocessing.connection`, pickled tuples):

    parent -> child   ("load", model_ref, options)      once, first
                      ("submit", request)               answered by "accepted" or "refused"
                      ("cancel", request_id)
                      ("call", call_id, name, args)     queue_position, score_answers
                      ("close",)
    child -> parent   ("progress", LoadProgress)        while loading
                      ("loaded", capabilities, report, progress) | ("failed", message)
                      ("accepted", request_id) | ("refused", request_id, error type, message)
                      ("event", request_id, Event)      deltas, then one "done"
                      ("reply", call_id, value, error type or None, message)

Each event is sent by the thread that decodes it (the local engine's `submit` callback), so no
relay thread stands between the model and the pipe; on this side one reader thread hands events
to the waiting streams. Refusals keep their `StudioError` class across the pipe.

Lifetimes. The child exits when the pipe closes, so it never outlives its app, whether the app
stopped, crashed or was killed: its main thread only reads the pipe (loading runs in a thread of
its own) and ignores Ctrl-C, which the app handles by closing the engine. `close()` asks the
child to cancel everything and exit, and kills it if it has not within `CLOSE_WAIT_S`. A child
that dies on its own (killed for memory, a crash in native code) ends every open stream with an
error event; if its model had loaded, a new child is started and loads it again, up to
`MAX_RESTARTS` times, while the page shows the progress.

ZeroGPU's GPU exists only inside each request's own call in the app's process: there the local
engine runs in-process (`app.build_engine(..., in_process=True)`).

Knows nothing of the UI or the database.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from engine import errors
from engine.errors import ENGINE_CLOSED_MESSAGE, EngineClosed, ModelNotReady, StudioError
from engine.loading import LoadProgress, LoadReport
from engine.types import Capabilities, Event, GenerationRequest, Message, Score, Stats

__all__ = ["CLOSE_WAIT_S", "MAX_RESTARTS", "ProcessEngine"]

log = logging.getLogger(__name__)

# Time for the child to cancel its requests and let go of the model before it is killed.
CLOSE_WAIT_S = 30.0
# Fresh children started after the model process died on its own, over the engine's life.
MAX_RESTARTS = 3
# How often the child reports loading progress: the page polls at about this pace.
PROGRESS_EVERY_S = 0.25
_ACCEPTED, _REFUSED = "accepted", "refused"


def _error(type_name: str | None, message: str) -> Exception:
    """The exception a message from the child stands for: its own `StudioError` class when the
    engine has one of that name, else a plain `StudioError` with the same words."""
    cls = getattr(errors, type_name or "", None)
    if isinstance(cls, type) and issubclass(cls, StudioError):
        return cls(message)
    return StudioError(message)


def _received(conn: Connection) -> Iterator[tuple]:
    """What the other side sends, until its end of the pipe closes."""
    while True:
        try:
            yield conn.recv()
        except (EOFError, OSError):
            return


def _described(exc: BaseException) -> tuple[str, str]:
    """What crosses the pipe of an exception: a StudioError's class and words; for anything else
    (a bug, logged in the child) a generic message."""
    if isinstance(exc, StudioError):
        return type(exc).__name__, str(exc)
    from engine.memory import failure_message

    return "StudioError", failure_message(exc)


class ProcessEngine:
    """A `LocalEngine` in a child process. `options` are `LocalEngine`'s keyword arguments."""

    def __init__(self, model_ref: str, **options) -> None:
        from engine.batching import BatchLimits

        self._model_ref = model_ref
        self._options = options
        self._concurrency = (options.get("batch_limits") or BatchLimits()).max_batch_size
        self._progress = LoadProgress("resolving", f"Waiting to load {model_ref}")
        self._load_error: str | None = None
        self._capabilities: Capabilities | None = None
        # The child's load report, for callers that built this engine themselves (logs).
        self.report: LoadReport | None = None
        self._ready = threading.Event()
        self._closed = False
        self._restarts = 0
        self._stopped_pid: int | None = None  # the child this side stopped on purpose
        self._lock = threading.Lock()  # one writer on the pipe at a time
        self._conn: Connection | None = None
        self._process: subprocess.Popen | None = None
        self._outcome: queue.Queue | None = None
        self._streams: dict[str, queue.Queue] = {}
        self._calls: dict[int, queue.Queue] = {}
        self._call_ids = itertools.count()

    # -- what it is and how loading goes -------------------------------------------------

    @property
    def model_ref(self) -> str:
        return self._model_ref

    @property
    def load_error(self) -> str | None:
        return self._load_error

    @property
    def progress(self) -> LoadProgress:
        return self._progress

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._closed

    @property
    def pid(self) -> int | None:
        """The id of the model process started last; None before `load`."""
        return self._process.pid if self._process is not None else None

    def load(self) -> LoadReport:
        """Start the model process and load the model there (blocking). On failure the message
        is kept in `load_error` and raised as `ModelLoadError`."""
        self._check_open()
        outcome: queue.Queue = queue.Queue()
        self._outcome = outcome
        self._load_error = None
        self._start()
        kind, value = outcome.get()
        if kind == "loaded":
            return value
        if self._closed:
            raise EngineClosed(ENGINE_CLOSED_MESSAGE)
        self._load_error = value
        self._progress = LoadProgress("failed", value)
        self._stop_child()  # nothing to serve: its memory is better given back
        raise errors.ModelLoadError(value)

    def _start(self) -> None:
        ours, theirs = Pipe(duplex=True)
        env = dict(os.environ)
        # The child finds this project's modules however the app was started.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.process", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=env)
        theirs.close()
        self._conn, self._process = ours, process
        threading.Thread(target=self._read, args=(ours, process), name="engine-process-reader",
                         daemon=True).start()
        self._send(("load", self._model_ref, self._options))

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout) and not self._closed

    def capabilities(self) -> Capabilities:
        self._check_open()
        if not self.ready or self._capabilities is None:
            raise ModelNotReady(self._progress.not_ready_message(self._load_error))
        return self._capabilities

    def quota_note(self) -> str | None:
        return None

    # -- serving -------------------------------------------------------------------------

    def stream(self, request: GenerationRequest) -> Iterator[Event]:
        """Events for one request; refusals raise their StudioError before any event."""
        self.capabilities()  # not ready, or closed: refused here, without a round trip
        request_id = request.request_id
        events: queue.Queue = queue.Queue()
        self._streams[request_id] = events
        try:
            self._send(("submit", request))
        except StudioError:
            self._streams.pop(request_id, None)
            raise
        first = events.get()
        if isinstance(first, tuple):
            if first[0] == _REFUSED:
                self._streams.pop(request_id, None)
                raise _error(first[2], first[3])
            first = None  # accepted
        return self._relay(request_id, events, first)

    def _relay(self, request_id: str, events: queue.Queue, first: Event | None
               ) -> Iterator[Event]:
        finished = False
        try:
            item = first if first is not None else events.get()
            while True:
                if isinstance(item, Event):  # an "accepted" after the first events is skipped
                    finished = item.kind == "done"
                    yield item
                    if finished:
                        return
                item = events.get()
        finally:
            self._streams.pop(request_id, None)
            if not finished:  # the caller went away: stop generating for nobody
                self.cancel(request_id)

    def cancel(self, request_id: str) -> None:
        # No model process: nothing runs that could be stopped.
        with contextlib.suppress(StudioError):
            self._send(("cancel", request_id))

    def queue_position(self, request_id: str) -> int | None:
        if not self.ready:
            return None
        return self._call("queue_position", request_id)

    def score_answers(self, messages: tuple[Message, ...], answers: Sequence[str],
                      adapter: str | None = None) -> list[Score]:
        self.capabilities()
        return self._call("score_answers", tuple(messages), list(answers), adapter)

    def _call(self, name: str, *args):
        call_id = next(self._call_ids)
        replies: queue.Queue = queue.Queue()
        self._calls[call_id] = replies
        try:
            self._send(("call", call_id, name, args))
            value, error_type, message = replies.get()
        finally:
            self._calls.pop(call_id, None)
        if error_type is not None:
            raise _error(error_type, message)
        return value

    def close(self) -> None:
        """Ask the model process to cancel everything and exit; kill it if it does not in time."""
        if self._closed:
            return
        self._closed = True
        self._stop_child()
        self._progress = LoadProgress("failed", ENGINE_CLOSED_MESSAGE)

    def _stop_child(self) -> None:
        process, conn = self._process, self._conn
        if process is not None:
            self._stopped_pid = process.pid
            try:
                with self._lock:
                    conn.send(("close",))
            except (OSError, ValueError):  # already gone
                pass
            try:
                process.wait(CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                log.warning("the model process did not stop within %.0f s: killing it",
                            CLOSE_WAIT_S)
                process.kill()
                process.wait()
        if conn is not None:
            conn.close()

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed(ENGINE_CLOSED_MESSAGE)

    # -- the pipe ------------------------------------------------------------------------

    def _send(self, message: tuple) -> None:
        conn = self._conn
        if conn is None:
            raise ModelNotReady(self._progress.not_ready_message(self._load_error))
        try:
            with self._lock:
                conn.send(message)
        except (OSError, ValueError):  # the child is gone (or the pipe closed by `close`)
            self._check_open()
            raise ModelNotReady(self._progress.not_ready_message(self._load_error)) from None

    def _read(self, conn: Connection, process: subprocess.Popen) -> None:
        """The reader thread: hands what the child sends to whoever waits for it."""
        loaded = False
        for message in _received(conn):
            kind = message[0]
            if kind == "event":
                _, request_id, event = message
                target = (self._streams.pop(request_id, None) if event.kind == "done"
                          else self._streams.get(request_id))
                if target is not None:
                    target.put(event)
            elif kind in (_ACCEPTED, _REFUSED):
                target = self._streams.get(message[1])
                if target is not None:
                    target.put(message)
            elif kind == "reply":
                replies = self._calls.get(message[1])
                if replies is not None:
                    replies.put(message[2:])
            elif kind == "progress":
                self._progress = message[1]
            elif kind == "loaded":
                loaded = True
                _, self._capabilities, self.report, self._progress = message
                self._ready.set()
                self._outcome.put(("loaded", self.report))
            elif kind == "failed":
                self._outcome.put(("failed", message[1]))
        self._gone(process, loaded)

    def _gone(self, process: subprocess.Popen, loaded: bool) -> None:
        """The child's end of the pipe closed: end whatever waited on it."""
        self._ready.clear()
        code = process.wait()
        expected = self._closed or process.pid == self._stopped_pid
        if self._closed:
            message = ENGINE_CLOSED_MESSAGE
        elif expected:
            message = self._load_error or "The model process was stopped."
        else:
            message = (f"The model process stopped unexpectedly (exit code {code}); "
                       "see the app's log.")
            log.error("%s", message)
        self._outcome.put(("failed", message))
        for request_id in list(self._streams):
            target = self._streams.pop(request_id, None)
            if target is not None:
                target.put(Event("done", stats=Stats(finish_reason="error"), error=message))
        for call_id in list(self._calls):
            replies = self._calls.get(call_id)
            if replies is not None:
                replies.put((None, "ModelNotReady", message))
        if expected or not loaded:
            return
        if self._restarts < MAX_RESTARTS:
            self._restarts += 1
            self._progress = LoadProgress("loading", f"Restarting the model. {message}")
            threading.Thread(target=self._reload, name="engine-process-restart",
                             daemon=True).start()
        else:
            self._load_error = message
            self._progress = LoadProgress("failed", message)

    def _reload(self) -> None:
        try:
            self.load()
        except StudioError as exc:
            log.error("the model could not be loaded again: %s", exc)


# -- the child ---------------------------------------------------------------------------


def _serve(conn: Connection) -> None:
    """The child's main loop: read the pipe until "close" or until the parent is gone."""
    lock = threading.Lock()
    engine = None

    def send(message: tuple) -> None:
        try:
            with lock:
                conn.send(message)
        except (OSError, ValueError):  # the parent is gone: the main loop sees it and exits
            pass

    def load(model_ref: str, options: dict) -> None:
        nonlocal engine
        from engine.local import LocalEngine

        local = LocalEngine(model_ref, **options)
        engine = local
        done = threading.Event()

        def report_progress() -> None:
            last = None
            while not done.wait(PROGRESS_EVERY_S):
                if local.progress != last:
                    last = local.progress
                    send(("progress", last))

        threading.Thread(target=report_progress, name="progress", daemon=True).start()
        try:
            report = local.load()
        except BaseException as exc:
            done.set()
            send(("failed", local.load_error or _described(exc)[1]))
            return
        done.set()
        send(("loaded", local.capabilities(), report, local.progress))

    def call(call_id: int, name: str, args: tuple) -> None:
        try:
            value = getattr(engine, name)(*args)
        except BaseException as exc:
            if not isinstance(exc, StudioError):
                log.exception("%s failed", name)
            send(("reply", call_id, None, *_described(exc)))
            return
        send(("reply", call_id, value, None, ""))

    for message in _received(conn):
        kind = message[0]
        if kind == "load":
            threading.Thread(target=load, args=message[1:], name="load-model",
                             daemon=True).start()
        elif kind == "submit":
            request = message[1]
            request_id = request.request_id
            try:
                engine.submit(request, lambda event, rid=request_id: send(("event", rid, event)))
            except BaseException as exc:
                if not isinstance(exc, StudioError):
                    log.exception("a request could not start")
                send((_REFUSED, request_id, *_described(exc)))
                continue
            send((_ACCEPTED, request_id))
        elif kind == "cancel":
            if engine is not None:
                engine.cancel(message[1])
        elif kind == "call":
            if message[2] == "queue_position":  # quick: answered in line
                call(*message[1:])
            else:
                threading.Thread(target=call, args=message[1:], name=message[2],
                                 daemon=True).start()
        elif kind == "close":
            break
    if engine is not None:
        engine.close()


def _threads_for_cpu() -> None:
    """On a CPU, leave one core to the web server: decoding with every core while the server
    renders and stores the stream slows both."""
    import torch

    if not torch.cuda.is_available():
        cores = os.cpu_count() or 1
        torch.set_num_threads(max(1, min(torch.get_num_threads(), cores - 1)))


def main(argv: list[str]) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the app closes this engine itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s [model process]: %(message)s")
    _threads_for_cpu()
    conn = Connection(int(argv[0]))
    try:
        _serve(conn)
    finally:
        logging.shutdown()
        # Daemon threads still decoding for nobody must not hold the exit.
        os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
