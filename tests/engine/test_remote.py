"""The remote engine against a real `transformers serve` process holding the tiny Qwen3.5.

One server is started per module (about 10 s on two cores) and stopped at the end. A small TCP
relay in front of it plays a server that goes away and comes back. A scripted HTTP server
speaks the other dialects seen in the wild (vLLM's `reasoning` field, `<think>` tags left in
the content, errors in the stream) and records what the engine sent.
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from engine.errors import ModelLoadError, ModelNotReady, RequestError
from engine.remote import RemoteEngine
from engine.types import GenerationRequest, Message, Sampling
from testing.events import collect
from testing.processes import free_port
from testing.serve import transformers_serve
from testing.waiting import wait_until

pytestmark = pytest.mark.slow

SERVER_START_TIMEOUT_S = 180
# Generous limits for things that happen in well under a second; no test asserts a timing.
EVENT_TIMEOUT_S = 60


@dataclass(frozen=True)
class Served:
    url: str
    model: str
    port: int


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tmp_path_factory) -> Served:
    """`transformers serve` pinned to the tiny Qwen3.5 folder, on CPU, on a free port."""
    path = tiny_checkpoint("qwen3_5")
    with transformers_serve(path, tmp_path_factory.mktemp("serve"),
                            timeout=SERVER_START_TIMEOUT_S) as server:
        yield Served(server.url, str(path), server.port)


@pytest.fixture(scope="module")
def engine(served):
    remote = RemoteEngine(served.url, served.model, timeout_s=60)
    remote.load()
    yield remote
    remote.close()


def _image(color=(200, 30, 30), size=(64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


def _noise(size=(96, 96)) -> Image.Image:
    values = bytes((i * 7919) % 251 for i in range(size[0] * size[1] * 3))
    return Image.frombytes("RGB", size, values)


def _request(*, thinking=False, max_new=24, seed=3, images=(), text="What is in the picture?",
             history=(), adapter=None, budget=None, **sampling) -> GenerationRequest:
    return GenerationRequest(
        messages=(*history, Message("user", text, tuple(images))),
        thinking=thinking, thinking_budget=budget, adapter=adapter,
        sampling=Sampling(max_new_tokens=max_new, temperature=0.0, seed=seed, **sampling))


def test_answer_about_an_image_streams_with_stats(engine):
    texts, kinds, done = collect(engine.stream(_request(images=[_image()], max_new=24)))
    assert done.error is None
    assert len(kinds) > 3 and set(kinds) == {"answer"}
    assert texts["answer"].strip() and texts["answer"] == texts["answer"].lstrip()
    stats = done.stats
    # transformers serve reports usage; the tiny model never says it is done in 24 tokens.
    assert stats.reasoning_tokens + stats.answer_tokens == 24
    assert stats.finish_reason == "length"
    assert stats.time_to_first_token_s is not None and stats.duration_s > 0
    assert stats.seed == 3


def test_the_model_sees_the_image(engine):
    first, _, _ = collect(engine.stream(_request(images=[_image()])))
    second, _, _ = collect(engine.stream(_request(images=[_noise()])))
    again, _, _ = collect(engine.stream(_request(images=[_image()])))
    # Greedy decoding: the same image gives the same answer, another image another one.
    assert first["answer"] == again["answer"]
    assert first["answer"] != second["answer"]


def test_thinking_on_streams_reasoning_and_off_does_not(engine):
    on_texts, on_kinds, on_done = collect(engine.stream(_request(thinking=True)))
    assert on_kinds[0] == "reasoning"
    assert on_texts["reasoning"].strip()
    assert on_done.stats.reasoning_tokens > 0
    assert "<think>" not in on_texts["reasoning"]

    off_texts, off_kinds, off_done = collect(engine.stream(_request(thinking=False)))
    assert "reasoning" not in off_kinds
    assert off_done.stats.reasoning_tokens == 0
    assert off_texts["answer"].strip()


def test_history_is_sent(engine):
    alone, _, _ = collect(engine.stream(_request(text="And now?")))
    history = (Message("user", "What is in the picture?", (_image(),)),
               Message("assistant", "A red rectangle."))
    followed, _, done = collect(engine.stream(_request(text="And now?", history=history)))
    assert done.error is None
    assert alone["answer"] != followed["answer"]


def test_cancel_from_another_thread_ends_the_stream(engine):
    request = _request(max_new=4000, seed=None)
    first_event = threading.Event()
    finished = threading.Event()
    seen = []

    def consume():
        for event in engine.stream(request):
            seen.append(event)
            first_event.set()
        finished.set()

    threading.Thread(target=consume, daemon=True).start()
    assert first_event.wait(EVENT_TIMEOUT_S)
    engine.cancel(request.request_id)
    assert finished.wait(EVENT_TIMEOUT_S)
    done = seen[-1]
    assert done.kind == "done" and done.error is None
    assert done.stats.finish_reason == "cancelled"
    assert done.stats.seed is not None
    assert done.stats.answer_tokens < 4000
    # The engine, and the server behind it, take the next request.
    _, _, after = collect(engine.stream(_request(max_new=8)))
    assert after.stats.finish_reason == "length"


def test_unknown_model_name_arrives_as_an_error_event(served):
    remote = RemoteEngine(served.url, "no-such-model")
    try:
        remote.load()  # transformers serve lists its download cache, so this is not caught here
        texts, kinds, done = collect(remote.stream(_request()))
    finally:
        remote.close()
    assert kinds == []
    assert done.stats.finish_reason == "error"
    assert "HTTP 400" in done.error and "no-such-model" in done.error


def test_adapter_is_sent_as_the_model_name(engine):
    # The pinned server refuses any other model name, and says which one it was given.
    texts, kinds, done = collect(engine.stream(_request(adapter="support-lora")))
    assert done.stats.finish_reason == "error"
    assert "support-lora" in done.error
    # A refused request leaves the engine working.
    _, _, after = collect(engine.stream(_request(max_new=8)))
    assert after.error is None


def test_requests_the_model_cannot_take_are_refused_before_sending(engine):
    with pytest.raises(RequestError, match="at most 8 images"):
        engine.stream(_request(images=[_image()] * 9))
    with pytest.raises(RequestError, match="no question"):
        engine.stream(GenerationRequest(messages=(Message("assistant", "Hello"),)))


def test_capabilities_describe_the_served_model(engine, served):
    caps = engine.capabilities()
    assert caps.model_id == served.model
    assert caps.thinking and not caps.thinking_budget
    assert caps.max_images == 8 and caps.multi_image


def test_the_server_keeps_its_own_queue_so_no_request_has_a_place_here(engine):
    # Asked while the server is answering the request: a local engine would say 0 (running).
    request = _request(max_new=24)
    events = engine.stream(request)
    try:
        assert next(events).kind in ("reasoning", "answer")
        assert engine.queue_position(request.request_id) is None
    finally:
        events.close()
    _, _, after = collect(engine.stream(_request(max_new=8)))
    assert after.error is None


# -- a server that goes away -----------------------------------------------------------------


class Relay:
    """A TCP relay to the server that can be switched off (nothing listens) and on again.

    It counts the connections that the client side hung up, as opposed to the server side.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.client_hangups = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._clients: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def stop(self) -> None:
        # shutdown, not close, wakes the thread blocked in accept() and the relayed reads.
        with self._lock:
            sockets = [self._listener, *self._open] if self._listener else list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open.update((client, upstream))
                self._clients.add(client)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        hung_up = False
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            hung_up = True
        except OSError:
            pass
        with self._lock:
            # Only the first side to end counts: tearing the pair down ends the other side too.
            if hung_up and source in self._clients and source in self._open:
                self.client_hangups += 1
            self._clients.discard(source)
            self._open.discard(source)
            self._open.discard(sink)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay(served):
    relay = Relay(served.port)
    yield relay
    relay.stop()


def test_server_down_then_up(served, relay):
    remote = RemoteEngine(relay.url, served.model, timeout_s=60)
    try:
        # Down from the start: loading says so, and so does asking.
        with pytest.raises(ModelLoadError, match="is not reachable"):
            remote.load()
        assert "is not reachable" in remote.load_error
        with pytest.raises(ModelNotReady, match="is not reachable"):
            remote.stream(_request())

        # The server comes up: the next request finds it without a restart of the app.
        relay.start()
        _, _, done = collect(remote.stream(_request(max_new=8)))
        assert done.error is None and remote.ready and remote.load_error is None

        # It goes away: the request ends in an error event that says what happened.
        relay.stop()
        texts, kinds, done = collect(remote.stream(_request(max_new=8)))
        assert kinds == []
        assert done.stats.finish_reason == "error"
        assert done.error.startswith(f"The model server at {relay.url} is not reachable")

        # It comes back: the same engine answers again.
        relay.start()
        texts, _, done = collect(remote.stream(_request(max_new=8)))
        assert done.error is None and texts["answer"]
    finally:
        remote.close()


def test_closing_the_stream_closes_the_connection(served, relay):
    relay.start()
    remote = RemoteEngine(relay.url, served.model, timeout_s=60)
    try:
        remote.load()
        events = remote.stream(_request(max_new=4000))
        next(events)
        assert relay.client_hangups == 0
        events.close()
        # The engine hangs up; the server, left alone, would stream on for thousands of tokens.
        wait_until(lambda: relay.client_hangups > 0, EVENT_TIMEOUT_S)
        assert relay.client_hangups == 1
        _, _, done = collect(remote.stream(_request(max_new=8)))
        assert done.error is None
    finally:
        remote.close()


# -- other dialects, from a scripted server ----------------------------------------------------


class Scripted:
    """An HTTP server that answers GET /v1/models with `listing` (vLLM-style unless a test
    sets another) and every chat completion with the reply set in `reply` (status, body
    lines); it keeps what it was sent.

    Body lines given as an iterator rather than a list are written one by one with no length,
    the end of the body being the end of the connection; `hangups` counts the replies the
    client stopped reading before they were all written.
    """

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.reply: tuple[int, list[str]] = (200, [])
        # The reply's content type; by default a stream of events, or JSON for an error.
        self.kind: str | None = None
        self.listing: dict = {"object": "list", "data": [
            {"id": "served-model", "object": "model", "owned_by": "vllm",
             "max_model_len": 32768, "parent": None},
            {"id": "support-lora", "object": "model", "owned_by": "vllm",
             "parent": "served-model"}]}
        self.hangups = 0
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/v1/models":
                    self._send(404, "application/json", ['{"detail": "Not Found"}'])
                    return
                self._send(200, "application/json", [json.dumps(scripted.listing)])

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                scripted.bodies.append(json.loads(self.rfile.read(length)))
                scripted.headers.append(dict(self.headers))
                status, lines = scripted.reply
                kind = scripted.kind or (
                    "text/event-stream" if status == 200 else "application/json")
                self._send(status, kind, lines)

            def _send(self, status, kind, lines):
                if not isinstance(lines, list):
                    self._send_unsized(status, kind, lines)
                    return
                payload = "".join(lines).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _send_unsized(self, status, kind, lines):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.end_headers()
                try:
                    for line in lines:
                        self.wfile.write(line.encode())
                except OSError:
                    scripted.hangups += 1
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _sse(*chunks: dict | str) -> list[str]:
    return [f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n" for c in chunks]


def _delta(finish=None, **delta) -> dict:
    return {"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.fixture
def scripted():
    server = Scripted()
    yield server
    server.close()


@pytest.fixture
def scripted_engine(scripted):
    remote = RemoteEngine(scripted.url, "served-model", api_key="sk-test", max_images=2,
                          thinking_budget_field="thinking_token_budget")
    remote.load()
    yield remote
    remote.close()


def test_request_body_carries_the_conversation_and_settings(scripted, scripted_engine):
    scripted.reply = (200, _sse(_delta(content="Red."), _delta(finish="stop"), "[DONE]"))
    picture = _noise((40, 30))
    history = (Message("system", "Be brief."),
               Message("user", "What is this?", (picture,)),
               Message("assistant", "Noise."))
    request = _request(history=history, text="And the colour?", images=[_image()],
                       thinking=True, budget=256, max_new=10_000, seed=11, top_k=20,
                       repetition_penalty=1.1, adapter="support-lora")
    _, _, done = collect(scripted_engine.stream(request))
    assert done.error is None

    body = scripted.bodies[-1]
    assert body["model"] == "support-lora"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 4096  # the engine's limit
    assert (body["temperature"], body["top_p"], body["seed"]) == (0.0, 0.9, 11)
    assert (body["top_k"], body["repetition_penalty"]) == (20, 1.1)
    assert body["chat_template_kwargs"] == {"enable_thinking": True}
    assert body["thinking_token_budget"] == 256
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "Be brief."
    image_part, text_part = body["messages"][1]["content"]
    assert text_part == {"type": "text", "text": "What is this?"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.format == "PNG" and sent.tobytes() == picture.tobytes()
    assert scripted.headers[-1]["Authorization"] == "Bearer sk-test"


def test_neutral_sampling_and_thinking_off_send_no_extra_fields(scripted, scripted_engine):
    scripted.reply = (200, _sse(_delta(content="Hi"), _delta(finish="stop")))
    collect(scripted_engine.stream(_request(thinking=False, budget=256)))
    body = scripted.bodies[-1]
    assert "top_k" not in body and "repetition_penalty" not in body
    assert "thinking_token_budget" not in body
    assert body["chat_template_kwargs"] == {"enable_thinking": False}

    plain = RemoteEngine(scripted.url, "served-model", thinking=False)
    try:
        plain.load()
        assert not plain.capabilities().thinking
        collect(plain.stream(_request(thinking=True)))
    finally:
        plain.close()
    assert "chat_template_kwargs" not in scripted.bodies[-1]


def test_listing_gives_context_length_and_adapters(scripted_engine):
    caps = scripted_engine.capabilities()
    assert caps.context_length == 32768
    assert caps.adapters == ("support-lora",)
    assert caps.thinking_budget
    assert caps.max_images == 2


def test_reasoning_field_and_usage(scripted, scripted_engine):
    usage = {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14,
             "completion_tokens_details": {"reasoning_tokens": 6}}
    scripted.reply = (200, _sse(
        _delta(role="assistant"),
        _delta(reasoning="\n"),
        _delta(reasoning="Looks "), _delta(reasoning="red.\n\n"),
        _delta(content="\n\nIt is "), _delta(content="red."),
        _delta(finish="stop"),
        {"object": "chat.completion.chunk", "choices": [], "usage": usage},
        "[DONE]"))
    texts, kinds, done = collect(scripted_engine.stream(_request(thinking=True)))
    assert texts == {"reasoning": "Looks red.", "answer": "It is red."}
    assert kinds[0] == "reasoning" and kinds[-1] == "answer"
    assert (done.stats.reasoning_tokens, done.stats.answer_tokens) == (6, 3)
    assert done.stats.finish_reason == "stop"


def test_think_tags_in_the_content_are_split(scripted, scripted_engine):
    scripted.reply = (200, _sse(
        _delta(content="<thi"), _delta(content="nk>\nHmm, red"), _delta(content=".</think>"),
        _delta(content="\n\nRed."), _delta(finish="length")))
    texts, _, done = collect(scripted_engine.stream(_request(thinking=True)))
    assert texts == {"reasoning": "Hmm, red.", "answer": "Red."}
    # No usage reported: chunks are counted.
    assert done.stats.reasoning_tokens + done.stats.answer_tokens == 4
    assert done.stats.finish_reason == "length"


@pytest.mark.parametrize("reply, expected", [
    ((500, ['{"error": {"message": "CUDA out of memory", "code": 500}}']),
     "failed on this request (HTTP 500: CUDA out of memory)"),
    ((401, ['{"detail": "bad key"}']), "refused the API key (HTTP 401)"),
    ((200, _sse(_delta(content="Re"), {"error": "generation crashed"})),
     "reported an error: generation crashed"),
    ((200, _sse(_delta(content="Re"), {"object": "error", "message": "engine dead"})),
     "reported an error: engine dead"),
    ((200, _sse(_delta(content="Re"), '{"error": "unescaped "quotes""}')),
     'reported an error: {"error": "unescaped "quotes""}'),
    ((200, _sse(_delta(content="Re"))), "broke off before the answer was finished"),
    ((200, _sse(_delta(content="Re"), _delta(finish="abort"))), "stopped this answer"),
])
def test_server_failures_arrive_as_error_events(scripted, scripted_engine, reply, expected):
    scripted.reply = reply
    _, _, done = collect(scripted_engine.stream(_request()))
    assert done.stats.finish_reason == "error"
    assert expected in done.error
    scripted.reply = (200, _sse(_delta(content="Fine."), _delta(finish="stop")))
    texts, _, done = collect(scripted_engine.stream(_request()))
    assert done.error is None and texts["answer"] == "Fine."


def test_a_server_that_ignores_max_tokens_is_cut_off_and_hung_up_on(scripted, scripted_engine):
    # Far more than any socket buffers hold, so that the server notices the client leaving.
    many = (f"data: {json.dumps(_delta(content=f'w{i} '))}\n\n" for i in range(300_000))
    scripted.reply = (200, itertools.chain(many, _sse(_delta(finish="stop"), "[DONE]")))
    texts, kinds, done = collect(scripted_engine.stream(_request(max_new=24)))
    assert done.error is None and done.stats.finish_reason == "length"
    assert kinds == ["answer"] * 24
    assert texts["answer"] == "".join(f"w{i} " for i in range(24))
    assert (done.stats.reasoning_tokens, done.stats.answer_tokens) == (0, 24)
    wait_until(lambda: scripted.hangups == 1, EVENT_TIMEOUT_S)
    scripted.reply = (200, _sse(_delta(content="Fine."), _delta(finish="stop")))
    texts, _, done = collect(scripted_engine.stream(_request()))
    assert done.error is None and texts["answer"] == "Fine."


@pytest.mark.parametrize("filler", [f"data: {json.dumps(_delta())}\n\n", ": keep-alive\n\n"])
def test_endless_lines_without_tokens_are_cut_off_and_hung_up_on(scripted, scripted_engine,
                                                                   filler):
    # Empty deltas or comments, each read well within the timeout, forever.
    scripted.reply = (200, itertools.chain(_sse(_delta(content="Hi")),
                                           itertools.repeat(filler, 3_000_000)))
    texts, _, done = collect(scripted_engine.stream(_request(max_new=24)))
    assert done.error is None and done.stats.finish_reason == "length"
    assert texts["answer"] == "Hi"
    wait_until(lambda: scripted.hangups == 1, EVENT_TIMEOUT_S)


def test_a_giant_chunk_is_cut_to_a_bounded_answer(scripted, scripted_engine):
    scripted.reply = (200, _sse(_delta(reasoning="R" * 5_000_000),
                                _delta(content="A" * 5_000_000), _delta(finish="stop"), "[DONE]"))
    texts, _, done = collect(scripted_engine.stream(_request(thinking=True, max_new=24)))
    assert done.error is None and done.stats.finish_reason == "length"
    # A generous allowance per token asked for, and not a character more.
    assert 24 <= len(texts.get("reasoning", "")) + len(texts.get("answer", "")) <= 24 * 64
    assert set(texts["reasoning"]) == {"R"}


def test_impossible_usage_counts_are_not_reported(scripted, scripted_engine):
    usage = {"completion_tokens": 3, "completion_tokens_details": {"reasoning_tokens": -40}}
    scripted.reply = (200, _sse(
        _delta(content="short"), _delta(finish="stop"),
        {"object": "chat.completion.chunk", "choices": [], "usage": usage}, "[DONE]"))
    _, _, done = collect(scripted_engine.stream(_request()))
    assert (done.stats.reasoning_tokens, done.stats.answer_tokens) == (0, 3)


def test_impossible_usage_totals_give_way_to_the_chunks_seen(scripted, scripted_engine):
    for total in (10**30, 2**63 + 5, 25):  # more than the 24 tokens asked for
        usage = {"completion_tokens": total, "completion_tokens_details": {}}
        scripted.reply = (200, _sse(
            _delta(content="two "), _delta(content="chunks"), _delta(finish="stop"),
            {"object": "chat.completion.chunk", "choices": [], "usage": usage}, "[DONE]"))
        _, _, done = collect(scripted_engine.stream(_request(max_new=24)))
        assert (done.stats.reasoning_tokens, done.stats.answer_tokens) == (0, 2), total


@pytest.mark.parametrize("end", ["\n", "\r\n", "\r"])
def test_lines_end_where_server_sent_events_end_them(scripted, scripted_engine, end):
    # JSON leaves U+2028, U+2029 and U+0085 unescaped inside a string: no line ends there.
    text = "one\u2028two\u2029three\x85four"
    chunks = [json.dumps(_delta(content=text), ensure_ascii=False), "",
              json.dumps(_delta(finish="stop")), "[DONE]"]
    scripted.reply = (200, [f"data: {chunk}{end}{end}" for chunk in chunks])
    texts, _, done = collect(scripted_engine.stream(_request()))
    assert done.error is None and done.stats.finish_reason == "stop"
    assert texts["answer"] == text


def test_a_line_without_end_is_cut_off_and_hung_up_on(scripted, scripted_engine):
    start = 'data: {"choices": [{"index": 0, "delta": {"content": "'
    scripted.reply = (200, itertools.chain(_sse(_delta(content="Hi ")), [start],
                                           itertools.repeat("x" * 65536, 1_000_000)))
    texts, _, done = collect(scripted_engine.stream(_request(max_new=24)))
    assert done.error is None and done.stats.finish_reason == "length"
    assert texts["answer"] == "Hi "
    wait_until(lambda: scripted.hangups == 1, EVENT_TIMEOUT_S)
    scripted.reply = (200, _sse(_delta(content="Fine."), _delta(finish="stop")))
    texts, _, done = collect(scripted_engine.stream(_request()))
    assert done.error is None and texts["answer"] == "Fine."


@pytest.mark.parametrize("kind, body, expected", [
    ("application/json",
     {"object": "chat.completion", "choices": [{"message": {"content": "Red."}}]},
     "answered with one JSON reply instead of a stream of tokens"),
    ("application/json", {"error": {"message": "streaming is not supported"}},
     "(streaming is not supported)"),
    ("text/html", "<html><body>Welcome to nginx!</body></html>",
     "answered with a web page instead of a stream of tokens"),
])
def test_a_reply_that_is_no_stream_is_said_to_be_one(scripted, scripted_engine, kind, body,
                                                      expected):
    scripted.kind = kind
    scripted.reply = (200, [body if isinstance(body, str) else json.dumps(body)])
    _, _, done = collect(scripted_engine.stream(_request()))
    assert done.stats.finish_reason == "error"
    assert expected in done.error


def test_a_stack_trace_from_the_server_is_shown_as_one_line(scripted, scripted_engine, caplog):
    trace = ('Traceback (most recent call last):\n  File "/srv/secret/app.py", line 1, in run\n'
             "    generate()\nRuntimeError: CUDA out of memory\n\n")
    scripted.reply = (500, [trace])
    with caplog.at_level("WARNING", logger="engine.remote"):
        _, _, done = collect(scripted_engine.stream(_request()))
    assert done.stats.finish_reason == "error"
    assert done.error.endswith("(HTTP 500: RuntimeError: CUDA out of memory).")
    assert "/srv/secret" not in done.error and "Traceback" not in done.error
    assert "/srv/secret/app.py" in caplog.text  # what the server said stays in the log
    scripted.reply = (500, ["x" * 5000 + "\n"])
    _, _, done = collect(scripted_engine.stream(_request()))
    assert len(done.error) < 600
    scripted.reply = (502, ["<html><body>\n<h1>502 Bad Gateway</h1>\n</body></html>\n"])
    _, _, done = collect(scripted_engine.stream(_request()))
    assert done.error.endswith("(HTTP 502: Bad Gateway).")


def test_listing_entries_that_are_not_models_are_passed_over(scripted):
    scripted.listing = {"data": [
        1, "x", {"id": ["l"], "parent": "served-model"}, {"id": None},
        {"id": "served-model", "max_model_len": "big"},
        {"id": "support-lora", "parent": "served-model"}]}
    remote = RemoteEngine(scripted.url, "served-model")
    try:
        caps = remote.load()
        assert remote.progress.stage == "ready"
        assert caps.adapters == ("support-lora",) and caps.context_length == 0
    finally:
        remote.close()


def test_load_says_what_is_wrong_with_the_address(scripted):
    remote = RemoteEngine(scripted.url.removesuffix("/v1") + "/nothing-here", "served-model")
    try:
        with pytest.raises(ModelLoadError, match="HTTP 404"):
            remote.load()
    finally:
        remote.close()
    with pytest.raises(ValueError, match="http://"):
        RemoteEngine("localhost:8000/v1", "served-model")


def test_the_studio_stores_a_remote_answer_like_a_local_one(served, tmp_path):
    # The same turn flow as the page, with the remote engine and a real SQLite file.
    from storage import Store
    from studio.turns import ChatState, Studio, TurnOptions

    remote = RemoteEngine(served.url, served.model, timeout_s=60)
    remote.load()
    with Store(tmp_path / "studio.db") as store:
        studio = Studio(remote, store)
        state = ChatState(consented=True)
        options = TurnOptions(thinking=True, thinking_budget=64,
                              sampling=Sampling(max_new_tokens=16, temperature=0.0, seed=5))
        updates = list(studio.ask(state, "What is it?", [_image()], options))
        assert updates[-1].done and updates[-1].error is None
        conversation = store.get_conversation(state.client_key, state.conversation_id)
        answer = conversation.messages[-1]
        assert answer.meta.model_id == served.model and answer.status == "done"
        assert answer.text == updates[-1].answer
        assert answer.stats.answer_tokens + answer.stats.reasoning_tokens > 0
        # No budget field on this server: the capability says so, for the page to show,
        # and the answer's provenance does not claim a budget that was never applied.
        assert remote.capabilities().thinking_budget is False
        assert answer.meta.thinking and answer.meta.thinking_budget is None
    remote.close()
