"""What the app adds on top of the model: the engine in-process vs the running app, one user.

For each engine speed (the tiny checkpoint, and the larger "medium" random Qwen3.5 sized to
decode at about 50 tokens/s here), the same greedy question about the same 640x480 image, with
thinking off and a fixed number of new tokens, is answered

- "engine": by `LocalEngine.stream` in this process, the image already decoded;
- "app, saving": by `python app.py --model PATH` in a subprocess, through `gradio_client` on
  the named "chat" endpoint, with "Save my data" on (the question, image, partial answers and
  the finished answer are written to SQLite);
- "app, not saving": the same with consent off (nothing is written).

The three are interleaved, repetition by repetition, so that load from elsewhere on the
machine hits them alike; each app question runs in a fresh session (a new conversation).
Times are taken by the caller: time to first token is from the call to the first visible
answer text (for the app this includes uploading the image, which a browser does earlier, and
gradio_client's polling; see `--client-poll-ms`), tokens/s is (tokens - 1) / (time of the last
update - time of the first). The engine's own figure (`Stats.tokens_per_s`, which the app
shows under each answer) is reported beside it. Greedy decoding must give the same answer on
both sides; the table says whether it did. A second table splits the app's time to first
token using the rows the saving runs wrote (when the question and the answer rows were
created, and the engine's own time to first token).

Torch is pinned to one thread in this process and in the app (OMP_NUM_THREADS=1), so the
engine gets one core and the web server, client and SQLite the other.

    python -m bench.overhead [--reps 7] [--max-new-tokens 64] [--models tiny medium]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
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
)
from bench.models import MODELS, model_path
from bench.workload import (
    STATS_LINE,
    answer_of,
    chat_arguments,
    engine_request,
    fresh_session,
    shows_answer,
)


@dataclass
class Sample:
    ttft_s: float
    total_s: float
    tokens: int
    engine_tokens_per_s: float
    text: str
    # Wall-clock (epoch) time of the call, to line the app's stored timestamps up with it.
    submitted_at: float = 0.0

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
    """Submit one question and watch its stream; the client must be in a fresh session."""
    from ui.render import plain_text

    submitted_at = time.time()
    started = time.perf_counter()
    job = client.submit(*arguments, api_name="/chat")
    first = None
    seen = 0
    while True:
        finished = job.done()  # read before the outputs, so none is missed at the end
        outputs = job.outputs()
        now = time.perf_counter()
        if first is None:
            if any(shows_answer(output) for output in outputs[seen:]):
                first = now
            seen = len(outputs)
        if finished:
            break
        time.sleep(poll_s)
    job.result()  # raises what the server raised
    final = answer_of(outputs[-1]) if outputs else ""
    match = STATS_LINE.search(final)
    if first is None or match is None:
        raise RuntimeError(f"the app gave no finished answer: {final[-300:]!r}")
    return Sample(first - started, now - started, int(match.group(1)),
                  float(match.group(2) or "nan"), plain_text(final), submitted_at)


def stored_timeline(db_path: Path, sample: Sample) -> dict[str, float]:
    """Where the time of one saved app answer went, from the rows the app wrote.

    The question row is written after the upload, the queue, the image check and the image
    write; the answer row is opened next; the engine reports its own time to first token from
    when generation starts, just after that. All on this machine's clock, in seconds from the
    call.
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
    first_token = since_call(answer) + (engine_ttft or 0.0)
    return {
        "call → question stored": since_call(question),
        "question stored → answer row opened": since_call(answer) - since_call(question),
        "answer row opened → first token (engine)": engine_ttft or float("nan"),
        "first token → caller sees it": sample.ttft_s - first_token,
        "last token → caller sees it": sample.total_s - since_call(finished),
    }


# -- one engine speed ------------------------------------------------------------------------


def measure(name: str, reps: int, max_new_tokens: int, poll_s: float, workdir: Path) -> list:
    from gradio_client import Client

    from engine.images import ImagePolicy, load_image
    from engine.local import LocalEngine

    path = model_path(name)
    image_path = scene_image(workdir / "scene.png")
    image = load_image(str(image_path), ImagePolicy())
    engine = LocalEngine(path, quantize="none", device="cpu")
    engine.load()
    samples: dict[str, list[Sample]] = {"engine": [], "app, saving": [], "app, not saving": []}
    timelines: list[dict[str, float]] = []
    load_before = load_average()
    with running_app(path, workdir / name) as app:
        client = Client(app.url, verbose=False)
        arguments = chat_arguments(image_path, max_new_tokens)
        for warm_up in range(2):
            ask_engine(engine, image, max_new_tokens)
            fresh_session(client, saving=warm_up == 0)
            ask_app(client, arguments, poll_s)
        for _ in range(reps):
            samples["engine"].append(ask_engine(engine, image, max_new_tokens))
            for variant, saving in (("app, saving", True), ("app, not saving", False)):
                fresh_session(client, saving)
                samples[variant].append(ask_app(client, arguments, poll_s))
                if saving:
                    timelines.append(stored_timeline(app.db_path, samples[variant][-1]))
        client.close()
        stored = _stored_answers(app.db_path)
    load_after = load_average()
    base = samples["engine"]
    base_ttft = median([s.ttft_s for s in base])
    base_speed = median([s.tokens_per_s for s in base])
    rows = []
    for variant, runs in samples.items():
        ttft = median([s.ttft_s for s in runs])
        speed = median([s.tokens_per_s for s in runs])
        same = sum(s.text == base[0].text for s in runs)
        rows.append([
            name, variant, len(runs), runs[0].tokens, ms(ttft),
            "" if variant == "engine" else f"{(ttft - base_ttft) * 1000:+.0f}",
            fixed(speed), "" if variant == "engine" else fixed(speed / base_speed, 2),
            fixed(median([s.engine_tokens_per_s for s in runs])),
            ms(median([s.total_s for s in runs])), f"{same}/{len(runs)}",
        ])
    print(f"- {name}: {path}; load average before {load_before}, after {load_after}; "
          f"answers stored by the saving runs: {stored}", flush=True)
    steps = [[name, step, ms(median([t[step] for t in timelines]))] for step in timelines[0]]
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
    parser.add_argument("--client-poll-ms", type=float, default=2.0,
                        help="how often the client looks for streamed updates (stock "
                             "gradio_client: 50)")
    args = parser.parse_args(argv)
    pin_threads(1)
    quiet_transformers()
    tighten_client_polling(args.client_poll_ms)
    print_machine("Overhead: engine in-process vs the app through gradio_client")
    print(f"- {args.reps} repetitions after 2 warm-ups, greedy, {args.max_new_tokens} new tokens, "
          f"thinking off, one 640x480 PNG; torch 1 thread in both processes; client polls "
          f"every {args.client_poll_ms:g} ms\n", flush=True)
    rows, steps = [], []
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        for name in args.models:
            model_rows, model_steps = measure(name, args.reps, args.max_new_tokens,
                                              args.client_poll_ms / 1000, Path(tmp))
            rows += model_rows
            steps += model_steps
    print()
    print_table("Medians", ["model", "path", "runs", "tokens", "TTFT ms", "Δ TTFT ms",
                            "tok/s (caller)", "ratio", "tok/s (engine)", "total ms",
                            "same answer"], rows)
    print_table("Where the first token's time goes in the app (saving runs, medians)",
                ["model", "step", "ms"], steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
