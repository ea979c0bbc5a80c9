"""The remote engine: a model served by an OpenAI-compatible server (vLLM, SGLang, transformers).

Implements `engine.protocol.Engine`, as `engine.local.LocalEngine` does: `load()` checks the
server, `stream(request)` yields reasoning / answer deltas and then one "done" event with
`Stats`, `cancel(request_id)` stops a running request from any thread, and closing the stream
iterator stops it too. The server does its own queueing, so `queue_position` knows nothing
(None); it keeps its logits to itself, so `score_answers` is refused. `close()` stops every
running request and closes the HTTP client.

What is sent, to POST {base_url}/chat/completions (base_url ends in /v1, as for every OpenAI
client): the whole conversation, images as PNG data URLs; `stream: true` with usage requested;
max_tokens, temperature, top_p and a seed (one is picked and reported when the request has
none); top_k when it is not 0 and repetition_penalty when it is not None, as extra fields
(vLLM and SGLang take them; `transformers serve` refuses unknown fields with HTTP 422). Left
out, they keep the served checkpoint's own values, as `engine.sampling` does locally;
thinking as `chat_template_kwargs: {"enable_thinking": ...}`; a request's adapter as the model
name, since vLLM serves each LoRA adapter under a model name of its own. There is no standard
field for a thinking budget, so none is sent unless the engine is told the server's field
(`thinking_budget_field`).

What is read: server-sent events. Reasoning arrives in `reasoning_content` or `reasoning`
deltas when the server separates it (vLLM and SGLang with a reasoning parser, transformers
serve for the families it knows), or between `<think>` tags in the content when it does not;
both go through one ThinkingParser, so whitespace and tags are treated as in the local engine.
Token counts come from the usage the server reports, else from the chunks seen. A server that
sends more than max_tokens chunks, an answer longer than MAX_CHARS_PER_TOKEN characters per
token asked for, endless lines that carry no token, or a line that never ends, is cut off there
(hung up on), and the answer ends as "length". Lines end where server-sent events say they do
(CR, LF, CRLF) and nowhere else: JSON carries U+2028 and U+2029 unescaped. Usage figures
beyond what was asked for are no counts; the chunks seen are counted instead. A reply that is
no stream of events (a JSON body, a web page) is said to be one.

Failures (server down, timeouts, HTTP error statuses, a stream broken off) end the stream with a
"done" event whose finish reason is "error" and whose message says what happened; nothing is
raised mid-stream and the engine keeps working. Knows nothing of torch, the UI or the database.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import httpx

from engine.errors import (
    ENGINE_CLOSED_MESSAGE,
    EngineClosed,
    ModelLoadError,
    ModelNotReady,
    RemoteError,
    RequestError,
)
from engine.images import encode_png
from engine.loading import LoadProgress
from engine.requests import check_request
from engine.sampling import pick_seed
from engine.scoring import NO_LOGITS_MESSAGE
from engine.thinking import ThinkingMode, ThinkingParser, thinking_on
from engine.types import (
    Capabilities,
    Event,
    FinishReason,
    GenerationRequest,
    Message,
    Score,
    Stats,
)

log = logging.getLogger(__name__)

OPEN_TAG, CLOSE_TAG = "<think>", "</think>"
DEFAULT_TIMEOUT_S = 120.0
# Connecting is quick or it is not going to happen; waiting for tokens may take long.
CONNECT_TIMEOUT_S = 10.0
# Server error texts are shown to the user; a stack trace in a 500 body is cut short.
MAX_DETAIL_CHARS = 300
# A server may ignore max_tokens, or pack a whole answer into one chunk: an answer is cut at
# this many characters per token asked for, generous for any tokenizer's longest token.
MAX_CHARS_PER_TOKEN = 32
# Lines may carry no token at all (empty deltas, keep-alive comments, the blank line after
# each event), so a server could stream them forever without a read ever timing out. Real
# servers send about two lines per token plus a few around the answer: this many lines per
# token asked for, plus LINES_SLACK, are read before the server is hung up on.
MAX_LINES_PER_TOKEN = 8
LINES_SLACK = 256
# One line carries one chunk, however much of the answer a server packs into it; a line that
# never ends would otherwise be held in memory until the server stops sending.
MAX_LINE_BYTES = 16 << 20
# Of a reply that is no stream of events (an error's body, a web page), this much is read.
MAX_BODY_BYTES = 1 << 20
_LINE_END = re.compile(rb"\r\n|\r|\n")

# Put on a request's queue by `cancel` so that a waiting consumer wakes at once.
_WAKE = object()


@dataclass
class _Call:
    """One request in flight: shared by the reading thread, the consumer and `cancel`."""

    request_id: str
    seed: int
    # The max_tokens sent: the most chunks (and, times MAX_CHARS_PER_TOKEN, characters) read.
    max_tokens: int = 1
    out: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0
    first_token_at: float | None = None
    reasoning_chunks: int = 0
    answer_chunks: int = 0
    usage: dict | None = None
    # The open HTTP response while it is being read; guarded by `lock` so that `interrupt`
    # never touches a connection that has gone back to the pool for another request.
    response: httpx.Response | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def interrupt(self) -> None:
        """Stop this request: wake the consumer and cut the connection under the reader."""
        self.cancelled.set()
        with self.lock:
            if self.response is not None:
                _shutdown(self.response)
        self.out.put(_WAKE)

    def stats(self, finish: FinishReason) -> Stats:
        reasoning, answer = self.reasoning_chunks, self.answer_chunks
        completion = (self.usage or {}).get("completion_tokens")
        # More tokens than were asked for is no count (a server cut off at max_tokens chunks
        # is hung up on before it reports any).
        if _count(completion) and completion <= self.max_tokens:
            # Servers stream about one token per chunk; the reported total is exact, and the
            # reasoning share is taken from the server when it reports one. A share outside
            # 0..total is no count at all: the chunks seen are the better guess.
            details = (self.usage or {}).get("completion_tokens_details") or {}
            reported = details.get("reasoning_tokens") if isinstance(details, dict) else None
            reasoning = min(reported if _count(reported) else reasoning, completion)
            answer = completion - reasoning
        first = self.first_token_at
        return Stats(
            reasoning_tokens=reasoning,
            answer_tokens=answer,
            time_to_first_token_s=(first - self.started) if first else None,
            duration_s=(time.perf_counter() - self.started) if self.started else 0.0,
            finish_reason=finish,
            seed=self.seed,
        )


def _count(value) -> bool:
    """Whether a usage figure from the server is a token count (bool is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _EndlessLine(Exception):
    """A line went on past MAX_LINE_BYTES."""


def _event_lines(response: httpx.Response) -> Iterator[str]:
    """The lines of a stream of server-sent events, which end at CR, LF or CRLF only: httpx's
    `iter_lines` also ends them at U+2028, U+2029 and U+0085, which JSON leaves unescaped in
    the middle of a chunk. Raises `_EndlessLine` for a line longer than MAX_LINE_BYTES."""
    buffer = bytearray()
    for piece in response.iter_bytes():
        # Only the new bytes can hold a line end (and a CR just before them, ending a CRLF).
        searched = max(0, len(buffer) - 1)
        buffer += piece
        start = 0
        for end in _LINE_END.finditer(buffer, searched):
            if end.group() == b"\r" and end.end() == len(buffer):
                break  # maybe the first half of a CRLF: wait for the next piece
            yield buffer[start:end.start()].decode("utf-8", errors="replace")
            start = end.end()
        del buffer[:start]
        if len(buffer) > MAX_LINE_BYTES:
            raise _EndlessLine
    if buffer:
        yield buffer.decode("utf-8", errors="replace")


def _body(response: httpx.Response) -> str:
    """The start of a reply that is no stream of events, as text: at most MAX_BODY_BYTES, so
    that a body without end is not read to its end."""
    data = bytearray()
    for piece in response.iter_bytes():
        data += piece
        if len(data) >= MAX_BODY_BYTES:
            break
    return bytes(data[:MAX_BODY_BYTES]).decode(response.encoding or "utf-8", errors="replace")


def _shutdown(response: httpx.Response) -> None:
    """Shut the response's socket down: a read blocked on it in another thread returns at once.

    Closing the socket instead would not wake that read on Linux, and the server would not
    see the client leave until its next write.
    """
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is None:
        return
    # The plain socket call also works for TLS sockets, without touching TLS state that the
    # reading thread is using. A socket already closed has nothing left to stop.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _data_url(image) -> str:
    return "data:image/png;base64," + base64.b64encode(encode_png(image)).decode("ascii")


def _detail(response: httpx.Response, text: str) -> str:
    """The server's own words about an error, in one short line: FastAPI `detail`, OpenAI
    `error.message`, or a line of a text body.

    A text body is often a whole stack trace, with the server's file paths in it: it goes to
    the log, and the user sees its last line, where Python names the exception (of an HTML
    page, the status's reason).
    """
    try:
        body = json.loads(text)
    except ValueError:
        log.warning("the model server answered %s %s with HTTP %d: %s", response.request.method,
                    response.request.url, response.status_code, text)
        lines = [line for line in text.splitlines() if line.strip()]
        # An HTML error page (a proxy's 502) says no more than its status does.
        html = text.lstrip().startswith("<")
        text = lines[-1] if lines and not html else response.reason_phrase
    else:
        text = ""
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                error = error.get("message")
            text = body.get("detail") or error or body.get("message") or ""
        if not isinstance(text, str):
            text = json.dumps(text)
        text = text or json.dumps(body)
    text = " ".join(text.split())
    return text[:MAX_DETAIL_CHARS] + ("..." if len(text) > MAX_DETAIL_CHARS else "")


# Requests the page lets run at once against a server: a serving engine (vLLM, SGLang) batches
# them itself, and more than this would mostly wait in its queue.
REMOTE_CONCURRENCY = 16


class RemoteEngine:
    """A model behind an OpenAI-compatible chat completions API. `load()` only checks the server."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_new_tokens_limit: int = 4096,
        max_images: int = 8,
        thinking: bool = True,
        thinking_budget_field: str | None = None,
    ) -> None:
        """`timeout_s` is how long the server may stay silent: before the answer starts and
        between two chunks. `thinking=False` says the served model cannot think, and then no
        `chat_template_kwargs` are sent at all (some servers refuse the field).
        `thinking_budget_field` names the request field that caps reasoning tokens on this
        server, for example "thinking_token_budget" for a vLLM started with
        `--reasoning-config`; without it the engine reports that it takes no budget."""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"The model server address {base_url!r} must start with http:// "
                             "or https://, for example http://127.0.0.1:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = timeout_s
        self.max_new_tokens_limit = max_new_tokens_limit
        self.max_images = max_images
        self.thinking = thinking
        self.thinking_budget_field = thinking_budget_field
        self._progress = LoadProgress("resolving", f"Waiting to contact the model server at "
                                                   f"{self.base_url}")
        self._load_error: str | None = None
        self._closed = False
        self.context_length = 0
        self.adapters: tuple[str, ...] = ()
        self._ready = threading.Event()
        self._calls: dict[str, _Call] = {}
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S)),
        )

    def close(self) -> None:
        """Stop every running request and close the connections. Later calls raise
        `EngineClosed`; closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        for call in list(self._calls.values()):
            call.interrupt()
        self._client.close()
        self._progress = LoadProgress("failed", ENGINE_CLOSED_MESSAGE)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed(ENGINE_CLOSED_MESSAGE)

    # -- loading -------------------------------------------------------------------------

    @property
    def model_ref(self) -> str:
        return self.model

    @property
    def load_error(self) -> str | None:
        return self._load_error

    @property
    def progress(self) -> LoadProgress:
        return self._progress

    @property
    def concurrency(self) -> int:
        """How many requests to let run at once: the server batches them itself."""
        return REMOTE_CONCURRENCY

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and not self._closed

    def load(self) -> Capabilities:
        """Ask the server which models it serves (blocking). Raises ModelLoadError when it
        cannot be reached or does not answer like an OpenAI-compatible server."""
        self._check_open()
        if not self.ready:
            self._progress = LoadProgress("loading",
                                          f"Contacting the model server at {self.base_url}")
        try:
            # Entries that are not models (no string id) are passed over, like other fields
            # of a shape this engine does not know.
            listed = {e["id"]: e for e in self._list_models()
                      if isinstance(e, dict) and isinstance(e.get("id"), str)}
        except Exception as exc:
            if not self.ready:  # an engine that works keeps working; requests report failures
                message = (str(exc) if isinstance(exc, ModelLoadError)
                           else f"{type(exc).__name__}: {exc}")
                self._load_error = message
                self._progress = LoadProgress("failed", message)
            raise
        entry = listed.get(self.model)
        if entry is None:
            # transformers serve lists the models in its download cache, not the one it was
            # started with, so an unlisted name is not an error; a wrong one fails per request.
            log.warning("the model server at %s does not list %r (it lists: %s)",
                        self.base_url, self.model, ", ".join(map(str, listed)) or "nothing")
        else:
            length = entry.get("max_model_len")  # vLLM and SGLang report the context window
            self.context_length = length if isinstance(length, int) else 0
        # vLLM lists each LoRA adapter it serves with the base model as its parent.
        self.adapters = tuple(name for name, e in listed.items()
                              if name != self.model and e.get("parent") == self.model)
        self._load_error = None
        self._progress = LoadProgress("ready", f"Served by {self.base_url}")
        self._ready.set()
        return self.capabilities()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout) and not self._closed

    def quota_note(self) -> str | None:
        return None

    def capabilities(self) -> Capabilities:
        self._check_open()
        if not self.ready:
            raise ModelNotReady(self._not_ready_message())
        return Capabilities(
            model_id=self.model,
            family="openai",
            thinking=self.thinking,
            multi_image=self.max_images > 1,
            max_images=self.max_images,
            context_length=self.context_length,
            thinking_budget=self.thinking and self.thinking_budget_field is not None,
            thinking_mode=self._thinking_mode,
            adapters=self.adapters,
            quantization="unknown",
        )

    @property
    def _thinking_mode(self) -> ThinkingMode:
        # A served model's template is not known here: it thinks when asked, if it can.
        return "switchable" if self.thinking else "never"

    def _not_ready_message(self) -> str:
        if self._load_error:
            return self._load_error
        return f"The model server is still being contacted ({self._progress.message})."

    def _list_models(self) -> list:
        url = f"{self.base_url}/models"
        try:
            response = self._client.get(url)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise ModelLoadError(self._unreachable_message()) from None
        except httpx.TimeoutException:
            raise ModelLoadError(f"The model server at {self.base_url} did not answer GET /models "
                                 f"within {self.timeout_s:g} seconds.") from None
        except httpx.HTTPError as exc:
            raise ModelLoadError(f"Asking the model server at {self.base_url} for its models "
                                 f"failed ({type(exc).__name__}: {exc}).") from None
        if response.status_code in (401, 403):
            raise ModelLoadError(f"The model server at {self.base_url} refused the API key "
                                 f"(HTTP {response.status_code}). Check the API key.")
        if response.status_code >= 400:
            raise ModelLoadError(
                f"The model server at {self.base_url} answered GET /models with HTTP "
                f"{response.status_code} ({_detail(response, response.text)}). Check the address: "
                "it usually ends in /v1.")
        try:
            entries = response.json()["data"]
            if not isinstance(entries, list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise ModelLoadError(
                f"{url} did not answer like an OpenAI-compatible server. Check the address: "
                "it usually ends in /v1.") from None
        return entries

    def _unreachable_message(self) -> str:
        return (f"The model server at {self.base_url} is not reachable. Check that it is "
                "running and that the address is right, then try again.")

    # -- serving -------------------------------------------------------------------------

    def queue_position(self, request_id: str) -> int | None:
        return None

    def score_answers(self, messages: tuple[Message, ...], answers: Sequence[str],
                      adapter: str | None = None) -> list[Score]:
        raise RequestError(NO_LOGITS_MESSAGE)

    def cancel(self, request_id: str) -> None:
        call = self._calls.get(request_id)
        if call is not None:
            call.interrupt()

    def stream(self, request: GenerationRequest) -> Iterator[Event]:
        """Yield events for one request. Refused requests raise a StudioError before any event.

        A server that could not be reached before is asked again here, so the app recovers
        once it is up.
        """
        self._check_open()
        if not self.ready:
            try:
                self.load()
            except ModelLoadError:
                raise ModelNotReady(self._not_ready_message()) from None
        check_request(request, self.max_images)
        sampling = request.sampling
        seed = pick_seed(sampling.seed)
        body = self._body(request, seed)
        call = _Call(request.request_id, seed, max_tokens=body["max_tokens"])
        self._calls[request.request_id] = call
        return self._run(body, call)

    def _body(self, request: GenerationRequest, seed: int) -> dict:
        sampling = request.sampling
        body: dict = {
            "model": request.adapter or self.model,
            "messages": [self._message(m) for m in request.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max(1, min(sampling.max_new_tokens, self.max_new_tokens_limit)),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "seed": seed,
        }
        # Extra fields only when the request sets them: not every server accepts them, and a
        # field left out keeps the served checkpoint's own value (vLLM and SGLang read its
        # generation_config), which is what top_k 0 and repetition_penalty None mean locally.
        if sampling.top_k:
            body["top_k"] = sampling.top_k
        if sampling.repetition_penalty is not None:
            body["repetition_penalty"] = sampling.repetition_penalty
        if self.thinking:
            thinking = thinking_on(self._thinking_mode, request.thinking)
            body["chat_template_kwargs"] = {"enable_thinking": thinking}
            if (thinking and request.thinking_budget is not None
                    and self.thinking_budget_field):
                body[self.thinking_budget_field] = request.thinking_budget
        return body

    @staticmethod
    def _message(message: Message) -> dict:
        if not message.images:
            return {"role": message.role, "content": message.text}
        content: list[dict] = [{"type": "image_url", "image_url": {"url": _data_url(image)}}
                               for image in message.images]
        content.append({"type": "text", "text": message.text})
        return {"role": message.role, "content": content}

    def _run(self, body: dict, call: _Call) -> Iterator[Event]:
        # A worker thread reads the HTTP stream, so that `cancel` can end this stream at once
        # even while the reader is still waiting for the server's first bytes.
        finished = False
        try:
            if call.cancelled.is_set():
                finished = True
                yield Event("done", stats=call.stats("cancelled"))
                return
            call.started = time.perf_counter()
            threading.Thread(target=self._receive, args=(body, call), daemon=True,
                             name=f"remote-{call.request_id[:8]}").start()
            while not finished:
                item = call.out.get()
                if item is _WAKE:
                    item = Event("done", stats=call.stats("cancelled"))
                finished = item.kind == "done"
                yield item
        finally:
            self._calls.pop(call.request_id, None)
            if not finished:  # the caller went away: stop generating for nobody
                call.interrupt()

    def _receive(self, body: dict, call: _Call) -> None:
        """The worker: one HTTP exchange, always ending in exactly one "done" event."""
        error = None
        try:
            finish = self._exchange(body, call)
        except RemoteError as exc:
            finish, error = "error", str(exc)
        except Exception:
            if not call.cancelled.is_set():
                log.exception("reading the answer from %s failed", self.base_url)
            finish = "error"
            error = "The answer from the model server could not be read. The error was logged."
        if call.cancelled.is_set():
            finish, error = "cancelled", None
        call.out.put(Event("done", stats=call.stats(finish), error=error))

    def _exchange(self, body: dict, call: _Call) -> FinishReason:
        try:
            request = self._client.build_request(
                "POST", f"{self.base_url}/chat/completions", json=body,
                headers={"X-Request-ID": call.request_id})
            response = self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise RemoteError(self._unreachable_message()) from None
        except httpx.TimeoutException:
            raise RemoteError(self._timeout_message()) from None
        except httpx.TransportError as exc:
            raise RemoteError(self._broken_message(exc)) from None
        try:
            with call.lock:
                call.response = response
            if call.cancelled.is_set():
                return "cancelled"
            if response.status_code >= 400:
                raise RemoteError(self._status_message(response))
            kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            if kind in ("application/json", "text/html"):
                raise RemoteError(self._not_a_stream_message(response, kind))
            return self._read(response, call)
        except httpx.TimeoutException:
            raise RemoteError(self._timeout_message()) from None
        except httpx.TransportError as exc:
            if call.cancelled.is_set():
                return "cancelled"
            raise RemoteError(self._broken_message(exc)) from None
        finally:
            with call.lock:
                call.response = None
            response.close()

    def _read(self, response: httpx.Response, call: _Call) -> FinishReason:
        """Turn the server-sent events into events on the call's queue; return the finish."""
        reader = _DeltaReader(call)
        finish: str | None = None
        ended = False
        lines_left = call.max_tokens * MAX_LINES_PER_TOKEN + LINES_SLACK
        lines = _event_lines(response)
        while True:
            try:
                line = next(lines, None)
            except _EndlessLine:
                log.warning("the model server at %s sent a line of over %d bytes; the answer "
                            "was cut there", self.base_url, MAX_LINE_BYTES)
                finish, ended = "length", True
                break
            if line is None:
                break
            if call.cancelled.is_set():
                return "cancelled"
            lines_left -= 1
            if lines_left < 0:
                log.warning("the model server at %s sent %d lines without finishing %d tokens; "
                            "the answer was cut there", self.base_url,
                            call.max_tokens * MAX_LINES_PER_TOKEN + LINES_SLACK,
                            call.max_tokens)
                finish, ended = "length", True
                break
            if not line.startswith("data:"):
                continue  # blank separators, comments, event names
            data = line[len("data:"):].strip()
            if not data:
                continue  # an event with no data carries nothing
            if data == "[DONE]":
                ended = True
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                raise RemoteError(self._server_error_message(data)) from None
            if not isinstance(chunk, dict):
                continue
            if chunk.get("error") or chunk.get("object") == "error":
                # {"error": "..."} (transformers), {"error": {"message": ...}} (OpenAI style),
                # {"object": "error", "message": ...} (older vLLM).
                error = chunk.get("error") or chunk
                if isinstance(error, dict):
                    error = error.get("message") or json.dumps(error)
                raise RemoteError(self._server_error_message(str(error)))
            if isinstance(chunk.get("usage"), dict):
                call.usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                reader.take(choice.get("delta") or {})
                finish = choice.get("finish_reason") or finish
            if reader.full:
                # The server sends more than was asked for: stop reading, and closing the
                # response hangs up, so that it stops generating too.
                log.warning("the model server at %s went on past the %d tokens asked for; "
                            "the answer was cut there", self.base_url, call.max_tokens)
                finish, ended = "length", True
                break
        reader.flush()
        if call.cancelled.is_set():
            return "cancelled"
        if finish == "length":
            return "length"
        if finish == "abort":
            raise RemoteError(f"The model server at {self.base_url} stopped this answer before "
                              "it was finished. Please ask again.")
        if finish is None and not ended:
            raise RemoteError(self._broken_message(None))
        return "stop"

    def _timeout_message(self) -> str:
        return (f"The model server at {self.base_url} did not answer within "
                f"{self.timeout_s:g} seconds. It may be overloaded; please try again.")

    def _broken_message(self, exc: Exception | None) -> str:
        cause = f" ({type(exc).__name__})" if exc is not None else ""
        return (f"The connection to the model server at {self.base_url} broke off before the "
                f"answer was finished{cause}. Please ask again.")

    def _status_message(self, response: httpx.Response) -> str:
        code = response.status_code
        if code in (401, 403):
            return (f"The model server at {self.base_url} refused the API key (HTTP {code}). "
                    "Check the API key.")
        verb = "failed on" if code >= 500 else "refused"
        return (f"The model server at {self.base_url} {verb} this request (HTTP {code}: "
                f"{_detail(response, _body(response))}).")

    def _not_a_stream_message(self, response: httpx.Response, kind: str) -> str:
        """A streamed answer was asked for, and a JSON body or a web page came back."""
        if kind == "text/html":
            return (f"The model server at {self.base_url} answered with a web page instead of "
                    "a stream of tokens. Check the address: it usually ends in /v1.")
        return (f"The model server at {self.base_url} answered with one JSON reply instead of "
                f"a stream of tokens ({_detail(response, _body(response))}). Is it an "
                "OpenAI-compatible server that streams?")

    def _server_error_message(self, text: str) -> str:
        text = " ".join(text.split())[:MAX_DETAIL_CHARS]
        return f"The model server at {self.base_url} reported an error: {text}"


class _DeltaReader:
    """Splits streamed deltas into reasoning and answer events, counting chunks per kind.

    A server that separates reasoning sends it in its own field; the tags it removed are put
    back around it before the text reaches the ThinkingParser, so that both ways of streaming
    go through the same rules (tags only at the start, whitespace around them dropped).

    No more than the call's max_tokens chunks, nor MAX_CHARS_PER_TOKEN times as many
    characters, are taken; text past either is dropped and `full` says so.
    """

    def __init__(self, call: _Call) -> None:
        self.call = call
        self.parser = ThinkingParser(OPEN_TAG, CLOSE_TAG)
        self.phase = "start"  # start -> reasoning (a reasoning field was seen) -> answer
        self.chars_left = call.max_tokens * MAX_CHARS_PER_TOKEN
        self.full = False

    def take(self, delta: dict) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        content = delta.get("content")
        if isinstance(reasoning, str) and reasoning:
            reasoning = self._admit(reasoning)
            if reasoning:
                self._reasoning(reasoning)
        if isinstance(content, str) and content:
            content = self._admit(content)
            if content:
                self._content(content)

    def _admit(self, text: str) -> str:
        """The part of `text` that fits in what is left of the answer's allowance."""
        if self.full or self.call.reasoning_chunks + self.call.answer_chunks >= (
                self.call.max_tokens):
            self.full = True
            return ""
        if len(text) >= self.chars_left:
            text = text[:self.chars_left]
            self.full = True
        self.chars_left -= len(text)
        return text

    def flush(self) -> None:
        self._emit(self.parser.flush())

    def _reasoning(self, text: str) -> None:
        # Servers may first send the whitespace their template put after the opening tag; it
        # is no token of the model's, and the parser drops it anyway.
        if text.strip() or self.call.reasoning_chunks:
            self._count("reasoning")
        if self.phase == "answer":
            # Reasoning after the answer began; the parser would not re-enter reasoning.
            self.call.out.put(Event("reasoning", text))
            return
        if self.phase == "start":
            text = OPEN_TAG + text
            self.phase = "reasoning"
        self._emit(self.parser.feed(text))

    def _content(self, text: str) -> None:
        if self.phase == "reasoning":
            text = CLOSE_TAG + text
        self.phase = "answer"
        pieces = self.parser.feed(text)
        self._count("reasoning" if self.parser.in_reasoning else "answer")
        self._emit(pieces)

    def _count(self, kind: str) -> None:
        if self.call.first_token_at is None:
            self.call.first_token_at = time.perf_counter()
        if kind == "reasoning":
            self.call.reasoning_chunks += 1
        else:
            self.call.answer_chunks += 1

    def _emit(self, pieces) -> None:
        for kind, text in pieces:
            self.call.out.put(Event(kind, text))
