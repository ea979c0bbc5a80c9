"""What the app adds on top of the model: the engine in-process vs the running app, one user.

For each engine speed (the tiny checkpoint, and the larger "medium" random Qwen3.5 sized to
decode at about 50 tokens/s here), the same greedy question about the same 640x480 image, with
thinking off and a fixed number of new tokens, is answered

- "engine": by `LocalEngine.stream` in this process, the image already decoded;
- "app, saving": by `python app.py --model PATH` in a subprocess, through `gradio_client` on
  the named "chat" endpoint, with "Save my data" on (the question, image, partial answers and
  the finished answer are written to SQLite);
- "app, not saving": the same with consent off (nothing is written).

Each app path is asked through each `--client` (`bench.common.app_client`): "lean" (the
default) downloads no files and reuses its connections, as a browser does; "stock" is
gradio_client's default, which opens a connection per request and downloads the question's
image again after every streamed update; "push" (`bench.push`) reads the event stream as the
page's own JavaScript does, seeing each message when it arrives. Asking with several shows
what each client alone costs.

All paths are interleaved, repetition by repetition, so that load from elsewhere on the
machine hits them alike; each app question runs in a fresh session (a new conversation).
Times are taken by the caller. Each app question first uploads its image through the client
(`bench.common.upload_first`, as a browser does when the image is attached), then sends the
question, so time to first token (to the first visible answer text) is given two ways: from
the call, upload included, and from sending, after the upload. The question's echo is from
sending to the first streamed update that shows the question in the chat; on the "chat"
endpoint the app's first update waits for the engine's first event, so the echo and the
first token arrive together unless that event carries no text (the page echoes a question
by other means: in the browser, and in an event outside the model's queue). Tokens/s is
(tokens - 1) / (time of the last update - time of the first); the engine's own figure
(`Stats.tokens_per_s`, which the app shows under each answer) is reported beside it. Every
time from a streamed update includes gradio_client's polling (see `--client-poll-ms`).
Greedy decoding must give the same answer on all paths; the table says whether it did. A
second table splits the app's time to first token using the rows the saving runs wrote (when
the question and the answer rows were created, and the engine's own time to first token).

Torch is pinned to one thread in this process and in the app (OMP_NUM_THREADS=1), so the
engine gets one core and the web server, client and SQLite the other.

    python -m bench.overhead [--reps 7] [--max-new-tokens 64] [--models tiny medium]
                             [--client lean stock] [--client-poll-ms 2] [--app-in-process]

The app runs its model in a process of its own, as it does by default; `--app-in-process`
runs it in the web server's process instead, for the comparison.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    CLIENTS,
    app_client,
    fixed,
    load_average,
    median,
    ms,
    pin_threads,
    print_machine,
    print_table,
    quiet_transformers,
    running_app,
    scene_image,
    tighten_client_polling,
    upload_first,
)
from bench.models import MODELS, model_path
from bench.workload import (
    STATS_LINE,
    answer_of,
    chat_arguments,
    engine_request,
    fresh_session,
    shows_answer,
    shows_question,
)


@dataclass
class Sample:
    ttft_s: float  # from the call: for the app, its upload included
    total_s: float  # from the call
    tokens: int
    engine_tokens_per_s: float
    text: str
    upload_s: float = 0.0  # the app's upload, before the question is sent; none in-process
    echo_s: float = math.nan  # from sending to the first update that shows the question
    # Wall-clock (epoch) time of the call, to line the app's stored timestamps up with it.
    submitted_at: float = 0.0

    @property
    def ttft_sent_s(self) -> float:
        return self.ttft_s - self.upload_s

    @property
    def tokens_per_s(self) -> float:
        decode = self.total_s - self.ttft_s
        return (self.tokens - 1) / decode if self.tokens > 1 and decode > 0 else float("nan")


# -- the engine in this process ------------------------------------------------------------


def ask_engine(engine, image, max_new_tokens: int) -> Sample:
    request = engine_request(image, max_new_tokens)
    text = ""
    first = stats = None
    started = time.perf_counter()
    for event in engine.stream(request):
        if event.kind == "answer":
            text += event.text
            if first is None and event.text.strip():
                first = time.perf_counter()
        elif event.kind == "done":
            stats = event.stats
    done = time.perf_counter()
    if stats is None or stats.finish_reason == "error" or first is None:
        raise RuntimeError(f"the engine gave no answer: {stats}")
    return Sample(first - started, done - started, stats.total_tokens, stats.tokens_per_s,
                  text.strip())


# -- the app through gradio_client -----------------------------------------------------------


def ask_app(client, arguments: list, poll_s: float) -> Sample:
    """Upload the image, then send the question and watch its stream; the client must be in
    a fresh session."""
    from bench.push import PushClient

    if isinstance(client, PushClient):
        return _ask_pushed(client, arguments)
    submitted_at = time.time()
    started = time.perf_counter()
    sendable = upload_first(client, arguments)
    sent = time.perf_counter()
    job = client.submit(*sendable, api_name="/chat")
    echo = first = None
    seen = 0
    while True:
        finished = job.done()  # read before the outputs, so none is missed at the end
        outputs = job.outputs()
        now = time.perf_counter()
        fresh = outputs[seen:]
        seen = len(outputs)
        if echo is None and any(shows_question(output) for output in fresh):
            echo = now
        if first is None and any(shows_answer(output) for output in fresh):
            first = now
        if finished:
            break
        time.sleep(poll_s)
    job.result()  # raises what the server raised
    final = answer_of(outputs[-1]) if outputs else ""
    return _finished(final, started, sent, echo, first, now, submitted_at)


def _finished(final: str, started: float, sent: float, echo: float | None,
              first: float | None, done: float, submitted_at: float) -> Sample:
    """The sample of an app answer from its last text and its moments (one clock)."""
    from ui.render import plain_text

    match = STATS_LINE.search(final)
    if first is None or match is None:
        raise RuntimeError(f"the app gave no finished answer: {final[-300:]!r}")
    return Sample(first - started, done - started, int(match.group(1)),
                  float(match.group(2) or "nan"), plain_text(final), sent - started,
                  echo - sent if echo is not None else math.nan, submitted_at)


def _ask_pushed(client, arguments: list) -> Sample:
    """`ask_app` for a client pushed each message: its moments are when they arrived."""
    started = time.time()
    sendable = client.with_uploads(arguments)
    sent = time.time()
    call = client.call(*sendable, api_name="/chat",
                       marks={"echo": shows_question, "first": shows_answer})
    if call.error is not None:
        raise RuntimeError(f"the app refused or failed the question: {call.error}")
    return _finished(answer_of(call.outputs), started, sent, call.seen.get("echo"),
                     call.seen.get("first"), call.done, started)


def stored_timeline(db_path: Path, sample: Sample) -> dict[str, float]:
    """Where the time of one saved app answer went, from the rows the app wrote.

    After the queue and the image check the app sends the request to the engine, stores the
    question while the engine reads the prompt, and opens the answer row beside the first
    update it sends (at the engine's first event); so the engine's own time to first token
    starts inside "question sent → question stored" and ends inside "question stored →
    answer row opened", and the last step is below zero when the caller saw the first token
    before the row was written. Timestamps are on this machine's clock; the three steps
    after the upload add up to the time to first token from sending.
    """
    import sqlite3
    from datetime import datetime

    with sqlite3.connect(db_path) as db:
        row = db.execute(
            "SELECT q.created_at, a.created_at, a.time_to_first_token_s, a.updated_at "
            "FROM messages a JOIN messages q ON a.parent_id = q.id "
            "WHERE a.role = 'assistant' ORDER BY a.id DESC LIMIT 1").fetchone()

    def since_call(stamp: str) -> float:
        return datetime.fromisoformat(stamp).timestamp() - sample.submitted_at

    question, answer, engine_ttft, finished = row
    return {
        "upload (by the caller)": sample.upload_s,
        "question sent → question stored": since_call(question) - sample.upload_s,
        "question stored → answer row opened": since_call(answer) - since_call(question),
        "the engine's time to first token, across both": engine_ttft or float("nan"),
        "answer row opened → caller sees the first token": sample.ttft_s - since_call(answer),
        "last token → caller sees it": sample.total_s - since_call(finished),
    }


# -- one engine speed ------------------------------------------------------------------------


def measure(name: str, reps: int, max_new_tokens: int, clients: list[str], poll_s: float,
            workdir: Path, app_flags: tuple[str, ...] = ()) -> tuple[list, list]:
    from contextlib import ExitStack

    from engine.images import ImagePolicy, load_image
    from engine.local import LocalEngine

    path = model_path(name)
    image_path = scene_image(workdir / "scene.png")
    image = load_image(str(image_path), ImagePolicy())
    # No device named: the engine picks the GPU when there is one, as the app's does.
    engine = LocalEngine(path, quantize="none")
    engine.load()
    paths = [("", "engine")] + [(kind, variant) for kind in clients
                                for variant in ("app, saving", "app, not saving")]
    samples: dict[tuple[str, str], list[Sample]] = {key: [] for key in paths}
    timelines: dict[str, list[dict[str, float]]] = {kind: [] for kind in clients}
    load_before = load_average()
    with running_app(path, workdir / name, *app_flags) as app, ExitStack() as stack:
        by_kind = {kind: stack.enter_context(app_client(app.url, kind)) for kind in clients}
        arguments = chat_arguments(image_path, max_new_tokens)
        for warm_up in range(2):
            ask_engine(engine, image, max_new_tokens)
            for client in by_kind.values():
                fresh_session(client, saving=warm_up == 0)
                ask_app(client, arguments, poll_s)
        for _ in range(reps):
            samples[("", "engine")].append(ask_engine(engine, image, max_new_tokens))
            for kind, client in by_kind.items():
                for variant, saving in (("app, saving", True), ("app, not saving", False)):
                    fresh_session(client, saving)
                    sample = ask_app(client, arguments, poll_s)
                    samples[(kind, variant)].append(sample)
                    if saving:
                        timelines[kind].append(stored_timeline(app.db_path, sample))
        stack.close()
        stored = _stored_answers(app.db_path)
    load_after = load_average()
    base = samples[("", "engine")]
    base_ttft = median([s.ttft_s for s in base])
    base_speed = median([s.tokens_per_s for s in base])
    rows = []
    for (kind, variant), runs in samples.items():
        in_app = variant != "engine"
        ttft_sent = median([s.ttft_sent_s for s in runs])
        speed = median([s.tokens_per_s for s in runs])
        same = sum(s.text == base[0].text for s in runs)
        rows.append([
            name, kind, variant, len(runs), runs[0].tokens,
            ms(median([s.echo_s for s in runs])) if in_app else "",
            ms(median([s.ttft_s for s in runs])), ms(ttft_sent),
            f"{(ttft_sent - base_ttft) * 1000:+.0f}" if in_app else "",
            fixed(speed), fixed(speed / base_speed, 2) if in_app else "",
            fixed(median([s.engine_tokens_per_s for s in runs])),
            ms(median([s.total_s for s in runs])), f"{same}/{len(runs)}",
        ])
    print(f"- {name}: {path}; load average before {load_before}, after {load_after}; "
          f"answers stored by the saving runs: {stored}", flush=True)
    steps = [[name, kind, step, ms(median([t[step] for t in runs]))]
             for kind, runs in timelines.items() for step in runs[0]]
    return rows, steps


def _stored_answers(db_path: Path) -> int:
    import sqlite3

    with sqlite3.connect(db_path) as db:
        return db.execute(
            "SELECT count(*) FROM messages WHERE role = 'assistant' AND status = 'done'"
        ).fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--app-in-process", action="store_true",
                        help="run the app with --in-process: its model in the web server's "
                             "process instead of a process of its own")
    parser.add_argument("--client", nargs="+", default=["lean"], choices=CLIENTS,
                        help="gradio_client as a browser behaves (lean), as it comes "
                             "(stock), and/or a client pushed each message as a browser is "
                             "(push); several are interleaved")
    parser.add_argument("--client-poll-ms", type=float, default=2.0,
                        help="how often the client looks for streamed updates (stock "
                             "gradio_client: 50)")
    args = parser.parse_args(argv)
    clients = list(dict.fromkeys(args.client))
    pin_threads(1)
    quiet_transformers()
    tighten_client_polling(args.client_poll_ms)
    print_machine("Overhead: engine in-process vs the app through gradio_client")
    print(f"- {args.reps} repetitions after 2 warm-ups, greedy, {args.max_new_tokens} new tokens, "
          f"thinking off, one 640x480 PNG; torch 1 thread in every process; the app's model "
          f"{'in the web server' if args.app_in_process else 'in a process of its own'}; client(s) "
          f"{', '.join(clients)}, polling every {args.client_poll_ms:g} ms\n", flush=True)
    rows, steps = [], []
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        for name in args.models:
            model_rows, model_steps = measure(name, args.reps, args.max_new_tokens, clients,
                                              args.client_poll_ms / 1000, Path(tmp),
                                              ("--in-process",) if args.app_in_process else ())
            rows += model_rows
            steps += model_steps
    print()
    print_table("Medians", ["model", "client", "path", "runs", "tokens", "echo ms (sent)",
                            "TTFT ms (call)", "TTFT ms (sent)", "Δ TTFT ms (sent)",
                            "tok/s (caller)", "ratio", "tok/s (engine)", "total ms",
                            "same answer"], rows)
    print("(call: from the call, the image's upload included; sent: from sending the "
          "question, after the upload; Δ against the engine's TTFT)\n")
    print_table("Where the first token's time goes in the app (saving runs, medians)",
                ["model", "client", "step", "ms"], steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
