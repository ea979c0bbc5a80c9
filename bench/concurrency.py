"""Many users at once against the running app: throughput, queue wait, time to first token.

`python app.py --model PATH` runs in a subprocess; for each answer length (`--max-new-tokens`,
default 64 and 256) and each user count (1, 4, 8, 16) that many threads, each with its own
`gradio_client` session, start together and each ask `--questions` questions one after
another (every question a new conversation about the same image, 640x480 unless
`--image-size` says otherwise, greedy, thinking off, "Save my data" on unless --no-saving).
A user's first question starts a fresh session and ticks "Save my data"; each later one
starts with the page's "New chat", as a person in a browser does, or with a fresh session and
the tick again (`--new-conversation new-session`, a new visitor per question). Each simulated
user is a client of the kind `--client` names (`bench.common.app_client`): "lean" (the
default) downloads no files and reuses its connections, as a browser does; "stock" is
gradio_client's default, which opens a connection per request and downloads the question's
image after every streamed update; "push" (`bench.push`) is not gradio_client at all but
reads the event stream as the page's own JavaScript does, so that it sees each message when
it arrives and takes no CPU between them. Several kinds are measured one after the other at
each setting.

Each question first uploads its image (`bench.common.upload_first`, as a browser does when
the image is attached), then is sent. Per request the caller records: queue wait (from
sending to the server's "process starts" message), time to first token from the call
(upload included) and from sending (to the first visible answer text, so both include the
queue wait), tokens (from the stats line under the answer) and errors (a failed job, a
refused request, or an answer that ends with an error). Aggregate tokens/s is all tokens over
the wall time from the first call to the last answer; a user's turnaround is from one answer's
end to their next answer's first token (the new conversation, the upload and the time to first
token): what the engine waits for that user between answers; "new conversation" is the part
of it spent starting the new conversation. Each gradio_client user looks for updates every
`--client-poll-ms` (20 ms): sixteen users polling faster take CPU from the app on a two-core
machine.

Beside each row, unless --no-in-process, the same users, questions and answer length are
asked of a `LocalEngine` in this process with the same batch limit (`bench.batching`'s
measurement, while the app idles), and "app ÷ in-process" is the app's aggregate over that
one: what the web app keeps of the engine's throughput.

The app runs once per `--max-batch` (default 1, then 8): with 1 it serves one generation at a
time, so aggregate throughput stays flat and the wait grows with the number of users; with 8
the engine decodes up to eight answers together and the page lets that many run at once. The
last table checks the batching targets at 8 users against 1 user of the same setting (time to
first token from sending).

    python -m bench.concurrency [--model tiny|medium] [--users 1 4 8 16] [--questions 3]
                                [--max-batch 1 8] [--max-new-tokens 64 256]
                                [--client lean stock] [--no-in-process] [--no-saving]
                                [--app-in-process] [--repeats 1]
                                [--new-conversation new-chat|new-session] [--server-phases]

The machine's speed drifts by several percent from one minute to the next, which moves a
single ratio as much as the app does: `--repeats N` measures each row N times, the in-process
engine and then the app, and a last table gives the ratio of their medians and each repeat's.

The app runs its model in a process of its own, as it does by default; `--app-in-process`
runs it in the web server's process instead, for the comparison. (`--no-in-process` is about
the reference engine this benchmark runs itself.) `--server-phases` has Gradio time every
event the app runs (its queue, preprocessing the inputs, the handler, postprocessing the
outputs) and prints the medians per event after each run.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import pairwise, product
from pathlib import Path
from statistics import median

from bench.batching import measure as measure_in_process
from bench.common import (
    CLIENTS,
    PHASES,
    PROFILING_ENV,
    app_client,
    fixed,
    load_average,
    ms,
    percentile,
    pin_threads,
    print_machine,
    print_table,
    quiet_transformers,
    running_app,
    scene_image,
    server_phases,
    tighten_client_polling,
    upload_first,
)
from bench.models import MODELS, model_path
from bench.workload import (
    STATS_LINE,
    answer_of,
    ask_engine,
    chat_arguments,
    fresh_session,
    new_chat,
    shows_answer,
)

# How a simulated user starts each question after their first (`run_users`).
RENEW = ("new-chat", "new-session")


@dataclass
class Request:
    submitted: float  # the call: the image's upload starts
    opened: float | None = None  # the fresh session began ("Save my data" ticked after)
    sent: float | None = None  # the question sent, once the image is uploaded
    started: float | None = None
    first: float | None = None
    done: float | None = None
    tokens: int = 0
    error: str | None = None
    user: int = 0
    warning: str | None = None


def _epoch(moment) -> float | None:
    return moment.timestamp() if moment is not None else None


def ask(client, arguments: list, poll_s: float, user: int = 0) -> Request:
    """One question, watched until it ends; never raises (errors are recorded)."""
    from gradio_client.utils import Status

    from bench.push import PushClient

    if isinstance(client, PushClient):
        return ask_pushed(client, arguments, user)
    request = Request(submitted=time.time(), user=user)
    try:
        sendable = upload_first(client, arguments)
        request.sent = time.time()
        job = client.submit(*sendable, api_name="/chat")
        seen = 0
        while True:
            finished = job.done()
            status = job.status()
            if status.log is not None:  # a warning shown to the user, e.g. a refusal
                request.warning = status.log[0]
            if request.started is None and status.code in (Status.PROCESSING,
                                                           Status.ITERATING):
                request.started = _epoch(status.time) or time.time()
            outputs = job.outputs()
            if request.first is None:
                if any(shows_answer(output) for output in outputs[seen:]):
                    request.first = time.time()
                seen = len(outputs)
            if finished:
                break
            time.sleep(poll_s)
        request.done = time.time()
        job.result()
        final = answer_of(outputs[-1]) if outputs else ""
        # An empty answer says little; the output it came from says what went out.
        seen_text = final[-160:] if final else repr(outputs[-1] if outputs else None)[:400]
        _settle(request, final, f"after {len(outputs)} updates: ...{seen_text!r}")
    except Exception as exc:  # a benchmark counts failures instead of stopping at the first
        request.done = request.done or time.time()
        request.error = f"{type(exc).__name__}: {exc}"
    return request


def _settle(request: Request, final: str, shown: str) -> None:
    """The request's tokens from its finished answer's stats line, or why there are none
    (`shown`: what the client last saw)."""
    match = STATS_LINE.search(final)
    if "**Error:**" in final:
        request.error = "the answer ended with an error"
    elif match is None:
        request.error = (f"no finished answer (refused or cut off), warning "
                         f"{request.warning!r}, {shown}")
    else:
        request.tokens = int(match.group(1))


def ask_pushed(client, arguments: list, user: int = 0) -> Request:
    """`ask` for a client that is pushed each message: its moments are when they arrived."""
    request = Request(submitted=time.time(), user=user)
    try:
        sendable = client.with_uploads(arguments)
        request.sent = time.time()
        call = client.call(*sendable, api_name="/chat", marks={"first": shows_answer})
        request.started, request.done = call.started, call.done
        request.first = call.seen.get("first")
        request.warning = call.warning
        final = answer_of(call.outputs)
        if call.error is not None:
            request.error = call.error
        else:
            _settle(request, final, f"...{final[-160:]!r}")
    except Exception as exc:  # a benchmark counts failures instead of stopping at the first
        request.done = request.done or time.time()
        request.error = f"{type(exc).__name__}: {exc}"
    return request


def run_users(clients: list, questions: int, arguments: list, saving: bool,
              poll_s: float, renew: str = "new-chat") -> tuple[list[Request], float]:
    """One thread per client, released together, each asking `questions` questions, each in
    a new conversation: the first in a fresh session (a visitor arriving, ticking "Save my
    data" when `saving`), the others after "New chat" (`renew` "new-chat") or each in a fresh
    session too ("new-session")."""
    results: list[list[Request]] = [[] for _ in clients]
    gate = threading.Barrier(len(clients) + 1)

    def user(index: int) -> None:
        client = clients[index]
        gate.wait()
        for question in range(questions):
            opened = time.time()
            try:
                if question and renew == "new-chat":
                    new_chat(client)
                else:
                    fresh_session(client, saving)
            except Exception as exc:
                results[index].append(Request(time.time(), done=time.time(),
                                              error=f"new conversation: {exc}", user=index))
                continue
            request = ask(client, arguments, poll_s, index)
            request.opened = opened
            results[index].append(request)

    threads = [threading.Thread(target=user, args=(i,), name=f"user-{i}")
               for i in range(len(clients))]
    for thread in threads:
        thread.start()
    gate.wait()
    for thread in threads:
        thread.join()
    requests = [r for per_user in results for r in per_user]
    wall = max(r.done for r in requests) - min(r.submitted for r in requests)
    return requests, wall


def summarize(requests: list[Request], wall: float) -> dict:
    good = [r for r in requests if r.error is None]
    waits = [r.started - r.sent for r in good if r.started is not None]
    from_call = [r.first - r.submitted for r in good if r.first is not None]
    from_send = [r.first - r.sent for r in good if r.first is not None]
    sessions = [r.submitted - r.opened for r in good if r.opened is not None]
    streams = [(r.tokens - 1) / (r.done - r.first) for r in good
               if r.first is not None and r.tokens > 1 and r.done > r.first]
    # From a user's answer ending to their next answer's first token: what the engine waits
    # for that user between two answers (in-process, about its own time to first token).
    turnarounds = [after.first - before.done for before, after in pairwise(requests)
                   if before.user == after.user and before.error is None
                   and after.error is None and after.first is not None]
    return {
        "requests": len(requests), "errors": len(requests) - len(good),
        "aggregate": sum(r.tokens for r in good) / wall,
        "wait_p50": percentile(waits, 50), "wait_p95": percentile(waits, 95),
        "call_p50": percentile(from_call, 50), "call_p95": percentile(from_call, 95),
        "sent_p50": percentile(from_send, 50), "sent_p95": percentile(from_send, 95),
        "stream": percentile(streams, 50), "wall": wall,
        "turnaround_p50": percentile(turnarounds, 50),
        "session_p50": percentile(sessions, 50), "session_p95": percentile(sessions, 95),
    }


def app_complaints(log: str, most: int = 40) -> list[str]:
    """The app log's warnings, errors and tracebacks: why a request failed, if it said."""
    lines = [line for line in log.splitlines()
             if any(word in line for word in ("WARNING", "ERROR", "Traceback", "Error:"))]
    return [f"app log: {line[:300]}" for line in lines[-most:]]


def in_process_engine(path: str, max_batch: int, image, max_new_tokens: int):
    """The engine the app runs, loaded in this process with the same batch limit."""
    from engine.batching import BatchLimits
    from engine.local import LocalEngine

    # No device named: the engine picks the GPU when there is one, as the app's does.
    engine = LocalEngine(path, quantize="none",
                         batch_limits=BatchLimits(max_batch_size=max_batch))
    engine.load()
    for _ in range(2):
        ask_engine(engine, image, max_new_tokens)  # warm-up
    return engine


def row_of(tokens: int, users: int, kind: str, app: dict, engine: dict | None) -> list:
    aggregate = engine["aggregate"] if engine else float("nan")
    ttft_p95 = engine["ttft_p95"] if engine else float("nan")
    return [tokens, users, kind, app["requests"], app["errors"], fixed(app["aggregate"]),
            fixed(aggregate), fixed(app["aggregate"] / aggregate, 2) if engine else "",
            ms(app["wait_p50"]), ms(app["wait_p95"]), ms(app["call_p50"]),
            ms(app["call_p95"]), ms(app["sent_p50"]), ms(app["sent_p95"]), ms(ttft_p95),
            fixed(app["sent_p95"] / ttft_p95, 2) if engine else "",
            fixed(app["stream"]), fixed(app["wall"]), ms(app["turnaround_p50"]),
            ms(app["session_p50"]), ms(app["session_p95"]),
            ms(engine["ttft_p50"]) if engine else ""]


HEADERS = ["tokens", "users", "client", "requests", "errors", "aggregate tok/s",
           "in-process tok/s", "app ÷ in-process", "queue wait p50 ms", "queue wait p95 ms",
           "TTFT p50 ms (call)", "TTFT p95 ms (call)", "TTFT p50 ms (sent)",
           "TTFT p95 ms (sent)", "in-process TTFT p95 ms", "TTFT p95 ÷ in-process",
           "stream tok/s p50", "wall s", "turnaround p50 ms",
           "new conversation p50 ms", "new conversation p95 ms", "in-process TTFT p50 ms"]


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not WIDTHxHEIGHT: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=MODELS)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--client", nargs="+", default=["lean"], choices=CLIENTS,
                        help="gradio_client as a browser behaves (lean), as it comes "
                             "(stock), and/or a client pushed each message as a browser is "
                             "(push)")
    parser.add_argument("--no-in-process", action="store_true",
                        help="skip asking the engine in this process beside each row")
    parser.add_argument("--no-saving", action="store_true")
    parser.add_argument("--app-in-process", action="store_true",
                        help="run the app with --in-process: its model in the web server's "
                             "process instead of a process of its own")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each row this many times, the in-process engine and "
                             "the app in turn, and summarise the ratios (the machine's speed "
                             "drifts between runs)")
    parser.add_argument("--new-conversation", default="new-chat", choices=RENEW,
                        help="how a user starts each question after their first: the page's "
                             "\"New chat\" (new-chat, as a person does) or a fresh session "
                             "ticking \"Save my data\" again (new-session)")
    parser.add_argument("--server-phases", action="store_true",
                        help="have Gradio time each event's phases in the app and print their "
                             "medians per event after each run (costs the app a little)")
    parser.add_argument("--image-size", default="640x480", type=_size, metavar="WxH",
                        help="the question's image; a small one makes the engine's time to "
                             "the first token short, as on a GPU, so that what the app adds "
                             "per question weighs as it does there")
    parser.add_argument("--client-poll-ms", type=float, default=20.0,
                        help="how often each simulated user looks for updates; shorter "
                             "polling costs the app CPU on a small machine")
    args = parser.parse_args(argv)
    kinds = list(dict.fromkeys(args.client))
    pin_threads(1)
    quiet_transformers()
    tighten_client_polling(args.client_poll_ms)
    print_machine("Concurrency: simulated users against the running app")
    path = model_path(args.model)
    saving = not args.no_saving
    poll_s = args.client_poll_ms / 1000
    print(f"- model {args.model} ({path}); {args.questions} questions per user about a "
          f"{args.image_size[0]}x{args.image_size[1]} image, each a new "
          f"conversation (after the first: {args.new_conversation}); greedy, "
          f"{' and '.join(map(str, args.max_new_tokens))} new tokens, "
          f"thinking off; saving {'on' if saving else 'off'}; app torch 1 thread; client(s) "
          f"{', '.join(kinds)}, polling every {args.client_poll_ms:g} ms; in-process engine "
          f"{'not asked' if args.no_in_process else 'asked beside each row'}\n", flush=True)
    app_flags = ("--in-process",) if args.app_in_process else ()
    where = "in the web server" if app_flags else "in a process of its own"
    print(f"- the app's model runs {where}\n", flush=True)
    tables: dict[int, list] = {}
    measured: dict[tuple[int, int, str], dict[int, dict]] = {}
    # (app, in-process) aggregate tok/s of each repeat, measured one right after the other.
    pairs: dict[tuple[int, int, int, str], list[tuple[float, float]]] = {}
    errors: list[str] = []
    phases: list[list] = []  # Gradio's timing of the app's events, per run
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        image_path = scene_image(Path(tmp) / "scene.png", args.image_size)
        for max_batch in args.max_batch:
            rows = tables.setdefault(max_batch, [])
            engine = image = None
            if not args.no_in_process:
                from engine.images import ImagePolicy, load_image

                image = load_image(str(image_path), ImagePolicy())
                engine = in_process_engine(path, max_batch, image, args.max_new_tokens[0])
            with running_app(path, Path(tmp) / f"app-{max_batch}", "--max-batch",
                             str(max_batch), *app_flags,
                             env=PROFILING_ENV if args.server_phases else None
                             ) as app, ExitStack() as stack:
                # One client per simulated user, made once: a Client fetches the page's
                # config, which takes seconds; each user's first question starts a new
                # session anyway.
                clients = {kind: [stack.enter_context(app_client(app.url, kind))
                                  for _ in range(max(args.users))] for kind in kinds}
                for kind in kinds:  # warm-up
                    run_users(clients[kind][:1], 2,
                              chat_arguments(image_path, args.max_new_tokens[0]), saving, poll_s,
                              args.new_conversation)
                if args.server_phases:
                    server_phases(app.url)  # the warm-up's events are not counted
                for tokens in args.max_new_tokens:
                    arguments = chat_arguments(image_path, tokens)
                    for users, _ in product(args.users, range(args.repeats)):
                        in_process = None
                        if engine is not None:
                            in_process = measure_in_process(engine, image, users,
                                                            args.questions, tokens)
                        for kind in kinds:
                            before = load_average()
                            requests, wall = run_users(clients[kind][:users], args.questions,
                                                       arguments, saving, poll_s,
                                                       args.new_conversation)
                            figures = summarize(requests, wall)
                            rows.append(row_of(tokens, users, kind, figures, in_process))
                            measured.setdefault((max_batch, tokens, kind), {})[users] = figures
                            if in_process is not None:
                                pairs.setdefault((max_batch, tokens, users, kind), []).append(
                                    (figures["aggregate"], in_process["aggregate"]))
                            if args.server_phases:
                                phases += [[max_batch, tokens, users, kind, name, timing["n"],
                                            *(fixed(timing[p], 1) for p in PHASES)]
                                           for name, timing in server_phases(app.url).items()]
                            errors += sorted({r.error for r in requests if r.error})
                            if any(r.error for r in requests):
                                errors += app_complaints(app.log())
                            print(f"- max batch {max_batch}, {tokens} tokens, {users} users, "
                                  f"{kind} client: load average before {before}, after "
                                  f"{load_average()}", flush=True)
            if engine is not None:
                engine.close()
    print()
    for max_batch, rows in tables.items():
        print_table(f"Max batch {max_batch}", HEADERS, rows)
    print("(call: from the call, the image's upload included; sent: from sending the "
          "question, after the upload; in-process: the engine in this process, same batch "
          "limit, users and answer length)\n")
    if phases:
        print_table("Server time per event (Gradio's own timing; medians, ms)",
                    ["max batch", "tokens", "users", "client", "event", "events",
                     *(p.replace("_", " ") for p in PHASES)], phases)
    if args.repeats > 1 and pairs:
        print_table(f"App ÷ in-process over {args.repeats} interleaved repeats",
                    ["max batch", "tokens", "users", "client", "app tok/s median",
                     "in-process tok/s median", "ratio of medians", "ratio per repeat"],
                    [[*key, fixed(median(a for a, _ in runs)), fixed(median(e for _, e in runs)),
                      fixed(median(a for a, _ in runs) / median(e for _, e in runs), 2),
                      " ".join(fixed(a / e, 2) for a, e in runs)]
                     for key, runs in pairs.items()])
    targets = []
    for (max_batch, tokens, kind), by_users in measured.items():
        if 1 in by_users and 8 in by_users:
            speedup = by_users[8]["aggregate"] / by_users[1]["aggregate"]
            ttft = by_users[8]["sent_p95"] / by_users[1]["sent_p95"]
            targets.append([max_batch, tokens, kind, fixed(speedup, 2),
                            "yes" if speedup >= 4 else "no", fixed(ttft, 2),
                            "yes" if ttft <= 2 else "no"])
    if targets:
        print_table("Targets at 8 users, against 1 user of the same setting",
                    ["max batch", "tokens", "client", "aggregate tok/s x", ">= 4x",
                     "TTFT p95 (sent) x", "<= 2x"], targets)
    if errors:
        print("Errors seen:\n" + "\n".join(f"- {e}" for e in errors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
