"""A benchmark client that is pushed each server message, as the page's own JavaScript is.

gradio_client passes every server message through threads that look for work every 20-50 ms
(`bench.common.tighten_client_polling`): each moment it reports is up to two polls late, and
on a small machine its idle threads (three per call, as many polls a second) take CPU from
the app. A browser reads the event stream and acts on each message as it arrives.
`PushClient` speaks Gradio's queue protocol the same way: one pooled HTTP client per
visitor, the calling thread blocked on the event stream, the time of each message taken
when it arrives.

- `PushClient(url)` is one visitor (a session); `reset_session()` makes it a new one.
- `predict(*args, api_name=...)` runs an event and returns its outputs; `call(...)` also
  returns when it started, when each of its `marks` (a name and a test of the outputs) first
  held for a streamed update, when it ended, and the warning the server showed, if any
  (`Call`).
- `with_uploads(args)` uploads the files named in `args` through the app's upload route, as
  the page does when an image is attached, and returns `args` naming them on the server.

State inputs are sent empty, as gradio_client sends them: the server keeps each session's.
"""

from __future__ import annotations

import json
import mimetypes
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

API = "/gradio_api"
TIMEOUT_S = 120.0


class CallError(RuntimeError):
    """The server ended the event with an error, or refused it (a full queue)."""


@dataclass
class Call:
    submitted: float
    started: float | None = None
    seen: dict[str, float] = field(default_factory=dict)  # mark -> its first update
    done: float | None = None
    outputs: list = field(default_factory=list)
    warning: str | None = None
    error: str | None = None


class PushClient:
    def __init__(self, url: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=TIMEOUT_S)
        config = self.http.get(f"{self.url}/config").raise_for_status().json()
        states = {c["id"] for c in config["components"] if c.get("type") == "state"}
        # api name -> (the event's id, which of its inputs are states)
        self.endpoints = {
            "/" + d["api_name"]: (d["id"], [i in states for i in d["inputs"]])
            for d in config["dependencies"] if d.get("api_name")}
        self.session = uuid.uuid4().hex

    def close(self) -> None:
        self.http.close()

    def reset_session(self) -> None:
        self.session = uuid.uuid4().hex

    def with_uploads(self, args: list) -> list:
        return [self._uploaded_in(value) for value in args]

    def _uploaded_in(self, value):
        """`value` with the files it names (itself, or a message's files) uploaded."""
        if _is_file(value):
            return self._uploaded(value)
        if isinstance(value, dict) and "files" in value:
            return {**value, "files": [self._uploaded_in(f) for f in value["files"]]}
        return value

    def _uploaded(self, file: dict) -> dict:
        path = Path(file["path"])
        with path.open("rb") as handle:
            response = self.http.post(f"{self.url}{API}/upload", files={
                "files": (path.name, handle, mimetypes.guess_type(path.name)[0]
                          or "application/octet-stream")})
        response.raise_for_status()
        return {"path": response.json()[0], "orig_name": path.name, "size": path.stat().st_size,
                "meta": {"_type": "gradio.FileData"}}

    def predict(self, *args, api_name: str) -> list:
        call = self.call(*args, api_name=api_name)
        if call.error is not None:
            raise CallError(call.error)
        return call.outputs

    def call(self, *args, api_name: str, marks: dict | None = None) -> Call:
        """Run the event `api_name` with `args` (its inputs but the states) to its end."""
        fn_index, is_state = self.endpoints[api_name]
        values = iter(args)
        data = [None if state else next(values) for state in is_state]
        call = Call(submitted=time.time())
        joined = self.http.post(f"{self.url}{API}/queue/join", json={
            "data": data, "event_data": None, "fn_index": fn_index, "trigger_id": None,
            "session_hash": self.session})
        if joined.status_code == 503:
            call.error, call.done = "the queue is full", time.time()
            return call
        event_id = joined.raise_for_status().json()["event_id"]
        with self.http.stream("GET", f"{self.url}{API}/queue/data",
                              params={"session_hash": self.session}) as stream:
            for message in _messages(stream):
                now = time.time()
                if message.get("event_id") not in (None, event_id):
                    continue
                kind = message.get("msg")
                if kind == "process_starts":
                    call.started = now
                elif kind == "log" and message.get("level") == "warning":
                    call.warning = message.get("log")
                elif kind == "process_generating":
                    call.outputs = _merged(call.outputs, message["output"]["data"])
                    for mark, test in (marks or {}).items():
                        if mark not in call.seen and test(call.outputs):
                            call.seen[mark] = now
                elif kind == "process_completed":
                    call.done = now
                    output = message.get("output") or {}
                    if message.get("success", True):
                        call.outputs = output.get("data", call.outputs)
                    else:
                        call.error = str(output.get("error") or "the event failed")
                    return call
                elif kind in ("close_stream", "unexpected_error"):
                    break
        call.done = time.time()
        call.error = call.error or "the event stream ended before the event did"
        return call


def _is_file(value) -> bool:
    return isinstance(value, dict) and (value.get("meta") or {}).get("_type") == \
        "gradio.FileData"


def _messages(stream):
    """The event stream's messages, each as soon as its blank line arrives."""
    for line in stream.iter_lines():
        if line.startswith("data:"):
            message = json.loads(line[5:])
            if message.get("msg") != "heartbeat":
                yield message


def _merged(previous: list, data: list) -> list:
    """A streamed update's outputs: the first comes whole, later ones as diffs of each output
    against the one before (Gradio's streaming diff)."""
    from gradio_client.utils import apply_diff

    if not previous:
        return list(data)
    return [apply_diff(previous[i] if i < len(previous) else None, diff)
            for i, diff in enumerate(data)]
