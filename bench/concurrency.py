"""Many users at once against the running app: throughput, queue wait, time to first token.

`python app.py --model PATH` runs in a subprocess; for each user count (1, 4, 8, 16) that many
threads, each with its own `gradio_client` session, start together and each ask `--questions`
questions one after another (every question a fresh conversation about the same 640x480 image,
greedy, thinking off, a fixed number of new tokens, "Save my data" on unless --no-saving).

Per request the caller records: queue wait (from submitting to the server's "process starts"
message; gradio_client uploads the image first, so even a lone user waits for the upload),
time to first token (from submitting to the first visible answer text, so it includes the
queue wait), tokens (from the stats line under the answer) and errors (a failed job, a
refused request, or an answer that ends with an error). Aggregate tokens/s is all tokens over
the wall time from the first submission to the last answer. Each simulated user looks for
updates every `--client-poll-ms` (20 ms): sixteen users polling faster take CPU from the app
on a two-core machine.

The app runs once per `--max-batch` (default 1, then 8): with 1 it serves one generation at a
time, so aggregate throughput stays flat and the wait grows with the number of users; with 8
the engine decodes up to eight answers together and the page lets that many run at once. The
last table checks the batching targets at 8 users against 1 user of the same setting.

    python -m bench.concurrency [--model tiny|medium] [--users 1 4 8 16] [--questions 3]
                                [--max-batch 1 8]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
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
    tighten_client_polling,
)
from bench.models import MODELS, model_path
from bench.workload import STATS_LINE, answer_of, chat_arguments, fresh_session, shows_answer


@dataclass
class Request:
    submitted: float
    started: float | None = None
    first: float | None = None
    done: float | None = None
    tokens: int = 0
    error: str | None = None


def _epoch(moment) -> float | None:
    return moment.timestamp() if moment is not None else None


def ask(client, arguments: list, poll_s: float) -> Request:
    """One question, watched until it ends; never raises (errors are recorded)."""
    from gradio_client.utils import Status

    request = Request(submitted=time.time())
    try:
        job = client.submit(*arguments, api_name="/chat")
        seen = 0
        while True:
            finished = job.done()
            status = job.status()
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
        match = STATS_LINE.search(final)
        if "**Error:**" in final:
            request.error = "the answer ended with an error"
        elif match is None:
            request.error = "no finished answer (refused or cut off)"
        else:
            request.tokens = int(match.group(1))
    except Exception as exc:  # a benchmark counts failures instead of stopping at the first
        request.done = request.done or time.time()
        request.error = f"{type(exc).__name__}: {exc}"
    return request


def run_users(url: str, users: int, questions: int, arguments: list, saving: bool,
              poll_s: float) -> tuple[list[Request], float]:
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(users)]
    results: list[list[Request]] = [[] for _ in range(users)]
    gate = threading.Barrier(users + 1)

    def user(index: int) -> None:
        client = clients[index]
        gate.wait()
        for _ in range(questions):
            try:
                fresh_session(client, saving)
            except Exception as exc:
                results[index].append(Request(time.time(), done=time.time(),
                                              error=f"consent: {exc}"))
                continue
            results[index].append(ask(client, arguments, poll_s))

    threads = [threading.Thread(target=user, args=(i,), name=f"user-{i}") for i in range(users)]
    for thread in threads:
        thread.start()
    gate.wait()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    requests = [r for per_user in results for r in per_user]
    wall = max(r.done for r in requests) - min(r.submitted for r in requests)
    return requests, wall


def summarize(users: int, requests: list[Request], wall: float) -> tuple[list, float, float]:
    """The table row, and the aggregate tokens/s and TTFT p95 (seconds) as numbers."""
    good = [r for r in requests if r.error is None]
    waits = [r.started - r.submitted for r in good if r.started is not None]
    ttfts = [r.first - r.submitted for r in good if r.first is not None]
    streams = [(r.tokens - 1) / (r.done - r.first) for r in good
               if r.first is not None and r.tokens > 1 and r.done > r.first]
    tokens = sum(r.tokens for r in good)
    row = [users, len(requests), len(requests) - len(good), fixed(tokens / wall),
            ms(percentile(waits, 50)), ms(percentile(waits, 95)),
            ms(percentile(ttfts, 50)), ms(percentile(ttfts, 95)),
            fixed(percentile(streams, 50)), fixed(wall)]
    return row, tokens / wall, percentile(ttfts, 95)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=MODELS)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--no-saving", action="store_true")
    parser.add_argument("--client-poll-ms", type=float, default=20.0,
                        help="how often each simulated user looks for updates; shorter "
                             "polling costs the app CPU on a small machine")
    args = parser.parse_args(argv)
    pin_threads(1)
    quiet_transformers()
    tighten_client_polling(args.client_poll_ms)
    print_machine("Concurrency: simulated users against the running app")
    path = model_path(args.model)
    saving = not args.no_saving
    print(f"- model {args.model} ({path}); {args.questions} questions per user, each a new "
          f"conversation; greedy, {args.max_new_tokens} new tokens, thinking off; saving "
          f"{'on' if saving else 'off'}; app torch 1 thread; client polls every "
          f"{args.client_poll_ms:g} ms\n", flush=True)
    tables: dict[int, list] = {}
    measured: dict[int, dict[int, tuple[float, float]]] = {}
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        image_path = scene_image(Path(tmp) / "scene.png")
        arguments = chat_arguments(image_path, args.max_new_tokens)
        for max_batch in args.max_batch:
            rows = tables.setdefault(max_batch, [])
            figures = measured.setdefault(max_batch, {})
            with running_app(path, Path(tmp) / f"app-{max_batch}", "--max-batch",
                             str(max_batch)) as app:
                run_users(app.url, 1, 2, arguments, saving, args.client_poll_ms / 1000)  # warm-up
                for users in args.users:
                    before = load_average()
                    requests, wall = run_users(app.url, users, args.questions, arguments,
                                               saving, args.client_poll_ms / 1000)
                    row, aggregate, ttft_p95 = summarize(users, requests, wall)
                    rows.append(row)
                    figures[users] = (aggregate, ttft_p95)
                    errors += sorted({r.error for r in requests if r.error})
                    print(f"- max batch {max_batch}, {users} users: load average before "
                          f"{before}, after {load_average()}", flush=True)
    print()
    headers = ["users", "requests", "errors", "aggregate tok/s", "queue wait p50 ms",
               "queue wait p95 ms", "TTFT p50 ms", "TTFT p95 ms", "stream tok/s p50", "wall s"]
    targets = []
    for max_batch, rows in tables.items():
        print_table(f"Max batch {max_batch}", headers, rows)
        by_users = measured[max_batch]
        if 1 in by_users and 8 in by_users:
            speedup = by_users[8][0] / by_users[1][0]
            ttft = by_users[8][1] / by_users[1][1]
            targets.append([max_batch, fixed(speedup, 2), "yes" if speedup >= 4 else "no",
                            fixed(ttft, 2), "yes" if ttft <= 2 else "no"])
    if targets:
        print_table("Targets at 8 users, against 1 user of the same setting",
                    ["max batch", "aggregate tok/s x", ">= 4x", "TTFT p95 x", "<= 2x"], targets)
    if errors:
        print("Errors seen:\n" + "\n".join(f"- {e}" for e in errors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
