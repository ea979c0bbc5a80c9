"""The local engine against a serving peer: `transformers serve`, with and without batching.

One workload, three backends, all on the same checkpoint (the tiny Qwen3.5 by default):

- "local engine": `engine.local.LocalEngine` in this process, as the app runs it (requests
  that arrive together are decoded together, up to 8 at a time: `engine.batching`);
- "serve": `transformers serve PATH --device cpu` in a subprocess, reached through
  `engine.remote.RemoteEngine`, as `python app.py --engine openai` reaches it;
- "serve --continuous-batching": the same server batching concurrent requests with paged
  attention.

For each user count, that many threads start together and each ask `--questions` questions
one after another (a fresh one-question conversation about the same 640x480 image, greedy,
thinking off, a fixed number of new tokens) through the engine's `stream()`. The caller times
time to first token (call to first answer text), per-request stream speed and the aggregate
tokens/s (all tokens over the wall time), and counts errors. Every process does its math on
one thread (torch in this process, OMP_NUM_THREADS=1 for the servers), so the comparison is
about scheduling and batching, not about who grabs more cores. "same answer" says how many
answers equal the local engine's greedy answer.

    python -m bench.peer [--model tiny|medium] [--users 1 4 8] [--questions 3]
"""

from __future__ import annotations

import argparse
import logging
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
    scene_image,
)
from bench.models import MODELS, model_path
from bench.workload import engine_request
from testing.serve import transformers_serve

SERVER_START_TIMEOUT_S = 300.0


@dataclass
class Answer:
    submitted: float
    first: float | None = None
    done: float | None = None
    tokens: int = 0
    text: str = ""
    error: str | None = None


def ask(engine, image, max_new_tokens: int) -> Answer:
    request = engine_request(image, max_new_tokens)
    answer = Answer(submitted=time.perf_counter())
    try:
        for event in engine.stream(request):
            if event.kind == "answer":
                answer.text += event.text
                if answer.first is None and event.text.strip():
                    answer.first = time.perf_counter()
            elif event.kind == "done":
                answer.done = time.perf_counter()
                answer.tokens = event.stats.total_tokens if event.stats else 0
                if event.error:
                    answer.error = event.error
    except Exception as exc:  # refused before streaming (busy, not ready): counted
        answer.error = f"{type(exc).__name__}: {exc}"
    answer.done = answer.done or time.perf_counter()
    answer.text = answer.text.strip()
    return answer


def run_users(engine, image, users: int, questions: int,
              max_new_tokens: int) -> tuple[list[Answer], float]:
    results: list[list[Answer]] = [[] for _ in range(users)]
    gate = threading.Barrier(users + 1)

    def user(index: int) -> None:
        gate.wait()
        for _ in range(questions):
            results[index].append(ask(engine, image, max_new_tokens))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for thread in threads:
        thread.start()
    gate.wait()
    for thread in threads:
        thread.join()
    answers = [a for per_user in results for a in per_user]
    return answers, max(a.done for a in answers) - min(a.submitted for a in answers)


def summarize(backend: str, users: int, answers: list[Answer], wall: float,
              reference: str) -> list:
    good = [a for a in answers if a.error is None and a.first is not None]
    ttfts = [a.first - a.submitted for a in good]
    streams = [(a.tokens - 1) / (a.done - a.first) for a in good
               if a.tokens > 1 and a.done > a.first]
    same = sum(a.text == reference for a in good)
    return [backend, users, len(answers), len(answers) - len(good),
            fixed(sum(a.tokens for a in good) / wall), ms(percentile(ttfts, 50)),
            ms(percentile(ttfts, 95)), fixed(percentile(streams, 50)), fixed(wall),
            f"{same}/{len(answers)}"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=MODELS)
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    pin_threads(1)
    quiet_transformers()
    # transformers serve lists only its download cache, never the folder it was started with.
    logging.getLogger("engine.remote").setLevel(logging.ERROR)
    from engine.images import ImagePolicy, load_image
    from engine.local import LocalEngine
    from engine.remote import RemoteEngine

    print_machine("Peer: local engine vs transformers serve")
    path = model_path(args.model)
    print(f"- model {args.model} ({path}); {args.questions} questions per user, greedy, "
          f"{args.max_new_tokens} new tokens, thinking off; one math thread per process\n",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        work = Path(tmp)
        image = load_image(str(scene_image(work / "scene.png")), ImagePolicy())
        local = LocalEngine(path, quantize="none", device="cpu")
        local.load()
        reference = ask(local, image, args.max_new_tokens).text  # also warms the engine up

        def measure(backend: str, engine) -> None:
            ask(engine, image, args.max_new_tokens)  # warm-up
            for users in args.users:
                before = load_average()
                answers, wall = run_users(engine, image, users, args.questions,
                                          args.max_new_tokens)
                rows.append(summarize(backend, users, answers, wall, reference))
                errors = sorted({a.error for a in answers if a.error})
                print(f"- {backend}, {users} users: load average before {before}, after "
                      f"{load_average()}" + (f"; errors: {errors}" if errors else ""),
                      flush=True)

        measure("local engine", local)
        local.close()  # its memory back before the servers load the same checkpoint
        for batching in (False, True):
            backend = "serve --continuous-batching" if batching else "serve"
            try:
                with transformers_serve(path, work / backend.replace(" ", ""),
                                        batching=batching,
                                        timeout=SERVER_START_TIMEOUT_S) as served:
                    remote = RemoteEngine(served.url, path, timeout_s=120)
                    remote.load()
                    measure(backend, remote)
                    remote.close()
                    for line in served.log_path.read_text(errors="replace").splitlines():
                        if "continuous batching" in line:
                            print(f"- {backend} said: {line.strip()}", flush=True)
            except (RuntimeError, TimeoutError) as exc:
                print(f"- {backend} could not run: {str(exc)[-600:]}", flush=True)
    print()
    print_table("Per backend and user count", ["backend", "users", "requests", "errors",
                                               "aggregate tok/s", "TTFT p50 ms",
                                               "TTFT p95 ms", "stream tok/s p50", "wall s",
                                               "same answer"], rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
