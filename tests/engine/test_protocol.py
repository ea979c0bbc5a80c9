"""Every engine implements `engine.protocol.Engine`, and closing one frees what it held.

The signature check compares each implementation with the protocol member by member, so an
engine that drifts from the contract (a member missing, renamed, or taking other arguments)
fails here rather than in the page that calls it.
"""

from __future__ import annotations

import gc
import inspect
import threading
import typing
import weakref
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from engine.batching import BatchLimits
from engine.errors import EngineClosed, RequestError
from engine.local import LocalEngine
from engine.process import ProcessEngine
from engine.protocol import Engine
from engine.remote import RemoteEngine
from engine.types import GenerationRequest, Message, Sampling
from engine.zerogpu import ZeroGPUEngine

# Generous limit for things that happen in well under a second; no test asserts a timing.
EVENT_TIMEOUT_S = 60

MEMBERS = sorted(name for name in vars(Engine) if not name.startswith("_"))


def _hints(function) -> dict:
    return typing.get_type_hints(function)


def mismatches(cls: type) -> list[str]:
    """How `cls` differs from the protocol; empty when it implements every member."""
    problems = []
    for name in MEMBERS:
        wanted = inspect.getattr_static(Engine, name)
        found = inspect.getattr_static(cls, name, None)
        if found is None:
            problems.append(f"{name}: missing")
        elif isinstance(wanted, property):
            if not isinstance(found, property):
                problems.append(f"{name}: not a property")
            elif _hints(wanted.fget).get("return") != _hints(found.fget).get("return"):
                problems.append(f"{name}: returns another type")
        elif not callable(found):
            problems.append(f"{name}: not a method")
        else:
            problems += [f"{name}: {p}" for p in _signature_mismatches(wanted, found)]
    return problems


def _signature_mismatches(wanted, found) -> list[str]:
    expected = list(inspect.signature(wanted).parameters.values())
    actual = list(inspect.signature(found).parameters.values())
    expected_hints, actual_hints = _hints(wanted), _hints(found)
    problems = []
    for index, parameter in enumerate(expected):
        if index >= len(actual):
            problems.append(f"takes no {parameter.name!r}")
            continue
        other = actual[index]
        if (other.name, other.kind, other.default) != (parameter.name, parameter.kind,
                                                       parameter.default):
            problems.append(f"{other} where the protocol has {parameter}")
        elif (parameter.name in expected_hints
              and actual_hints.get(parameter.name) != expected_hints[parameter.name]):
            problems.append(f"{parameter.name!r} has another type")
    for extra in actual[len(expected):]:
        if extra.default is inspect.Parameter.empty and extra.kind not in (
                inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            problems.append(f"needs {extra.name!r}, which the protocol does not pass")
    wanted_return = expected_hints.get("return")
    if wanted_return is not object and actual_hints.get("return") != wanted_return:
        problems.append("returns another type")
    return problems


@pytest.mark.parametrize("cls", [LocalEngine, ProcessEngine, RemoteEngine, ZeroGPUEngine])
def test_each_engine_implements_every_member_of_the_protocol(cls):
    assert mismatches(cls) == []


def test_the_check_finds_an_engine_that_drifted():
    class Drifted(RemoteEngine):
        def cancel(self, request_id: str, hard: bool) -> None:  # a new required argument
            pass

        def queue_position(self, request: str) -> int | None:  # renamed
            return None

        score_answers = None  # no longer a method

    found = mismatches(Drifted)
    assert [p.split(":")[0] for p in found] == ["cancel", "queue_position", "score_answers"]


def _request(max_new: int = 8) -> GenerationRequest:
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    return GenerationRequest(messages=(Message("user", "What is this?", (image,)),),
                             sampling=Sampling(max_new_tokens=max_new, temperature=0.0, seed=1))


@pytest.mark.parametrize("max_batch", [8, 1], ids=["batched", "one-at-a-time"])
def test_a_closed_local_engine_lets_its_model_be_collected(max_batch):
    engine = LocalEngine("tiny-random", quantize="none", device="cpu",
                         batch_limits=BatchLimits(max_batch_size=max_batch))
    engine.load()
    assert engine.batching == (max_batch > 1)
    model = weakref.ref(engine.model)
    events = list(engine.stream(_request()))
    assert events[-1].kind == "done" and events[-1].error is None
    engine.close()
    gc.collect()
    assert model() is None, "something still holds the closed engine's model"
    engine.close()  # closing again does nothing
    assert not engine.ready
    with pytest.raises(EngineClosed, match="shut down"):
        engine.stream(_request())
    with pytest.raises(EngineClosed):
        engine.capabilities()
    with pytest.raises(EngineClosed):
        engine.load()


def test_closing_ends_a_running_request_as_cancelled():
    engine = LocalEngine("tiny-random", quantize="none", device="cpu")
    engine.load()
    events = engine.stream(_request(max_new=4000))
    first = next(events)
    assert first.kind != "done"
    engine.close()
    done = list(events)[-1]
    assert done.kind == "done" and done.stats.finish_reason == "cancelled"


class _Hanging(BaseHTTPRequestHandler):
    """Lists one model; answers a chat request with one chunk, then waits for the client to
    leave, and says when it did."""

    left = threading.Event()

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._send(b'{"data": [{"id": "served"}]}', "application/json")

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(b'data: {"choices": [{"index": 0, "delta": {"content": "Red"}}]}\n\n')
        self.wfile.flush()
        self.rfile.read(1)  # returns once the client has closed its side
        type(self).left.set()

    def _send(self, body: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_closed_remote_engine_drops_its_connections_and_refuses_requests():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hanging)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        engine = RemoteEngine(f"http://127.0.0.1:{server.server_port}/v1", "served")
        engine.load()
        events = engine.stream(_request())
        assert next(events).text == "Red"
        engine.close()
        done = list(events)[-1]
        assert done.kind == "done" and done.stats.finish_reason == "cancelled"
        assert _Hanging.left.wait(EVENT_TIMEOUT_S), "the server never saw the client leave"
        engine.close()
        assert not engine.ready
        with pytest.raises(EngineClosed):
            engine.stream(_request())
        with pytest.raises(EngineClosed):
            engine.load()
        with pytest.raises(RequestError, match="local engine"):
            engine.score_answers((Message("user", "Hi?"),), ["Hello"])
    finally:
        server.shutdown()
        server.server_close()
