"""What keeping the data costs: logging a turn, many writers at once, exporting many pairs.

Everything goes through the real `storage.Store` on a real SQLite file (WAL, synchronous=FULL,
one IMMEDIATE transaction per logical write), as the app uses it:

1. One turn, logged by the app's own `studio.turns.Studio` (a consented question about a photo,
   asked with `Studio.ask`) from an engine that answers at once, so that what the turn costs is
   the Studio's work and the storage's: the image cleaned and PNG-encoded, `put_image`,
   `create_conversation`, `add_user_message`, `start_answer`, `--partials` x `save_partial`
   (the app saves about once a second while an answer streams; here at every one of the
   `--partials` answer events) and `finish_answer`; each Store call timed, `--turns` turns,
   each with a different 640x480 image.
2. The same turns from 1 and from `--writers` threads at once on one Studio and `Store` (each
   thread has its own connection and its own session, as in the app): turns/s, turn latency,
   and the latency of `save_partial`, which runs inside the streaming loop and so delays the
   answer on screen.
3. `--pairs` preference pairs (a question with its own small image, two answers, a like and a
   dislike: one DPO pair, two KTO examples, one SFT example each), built through the Store API
   into a cached database under <cache>/bench/, then exported to every format of
   `exports.formats`, each into an empty folder: seconds, examples and bytes written.

    python -m bench.storage [--turns 200] [--writers 16] [--pairs 10000] [--formats ...]
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from bench.common import (
    bench_cache_dir,
    fixed,
    load_average,
    ms,
    percentile,
    print_machine,
    print_table,
)

CONSENT = "bench"
# Bumped whenever what build_pairs writes changes, so a cached database is rebuilt.
FIXTURE_VERSION = 2


def _text(rng: random.Random, lines: list[str], sentences: int) -> str:
    return " ".join(rng.choice(lines) for _ in range(sentences))


def _photo(index: int, size: tuple[int, int] = (640, 480)):
    """A photo-sized image that differs per index (so every turn stores a new file)."""
    from PIL import Image, ImageDraw

    rng = random.Random(index)
    image = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        draw.rectangle((x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 150)),
                       fill=tuple(rng.randrange(256) for _ in range(3)))
    draw.text((10, 10), f"turn {index}", fill=(0, 0, 0))
    return image


# -- 1 and 2: logging turns ------------------------------------------------------------------

# The Store calls one turn makes, in the order the Studio makes them.
STEPS = ("put_image", "create_conversation", "add_user_message", "start_answer",
         "save_partial", "finish_answer")


def timed_store(path: Path):
    """A real Store on `path` that also times every call of a turn's steps, from any thread."""
    from storage import Store

    class TimedStore(Store):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.timings: dict[str, list[float]] = defaultdict(list)
            self._timings_lock = threading.Lock()

        def _timed(self, name: str, call, *args, **kwargs):
            begin = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                with self._timings_lock:
                    self.timings[name].append(time.perf_counter() - begin)

        def put_image(self, *args, **kwargs):
            return self._timed("put_image", super().put_image, *args, **kwargs)

        def create_conversation(self, *args, **kwargs):
            return self._timed("create_conversation", super().create_conversation, *args,
                               **kwargs)

        def add_user_message(self, *args, **kwargs):
            return self._timed("add_user_message", super().add_user_message, *args, **kwargs)

        def start_answer(self, *args, **kwargs):
            return self._timed("start_answer", super().start_answer, *args, **kwargs)

        def save_partial(self, *args, **kwargs):
            return self._timed("save_partial", super().save_partial, *args, **kwargs)

        def finish_answer(self, *args, **kwargs):
            return self._timed("finish_answer", super().finish_answer, *args, **kwargs)

    return TimedStore(path)


class InstantEngine:
    """Answers at once, in `pieces` answer events and a done event: what a turn then costs is
    the Studio's own work (cleaning and encoding the image) and the storage's."""

    def __init__(self, lines: list[str], pieces: int) -> None:
        self.lines = lines
        self.pieces = max(1, pieces)

    def stream(self, request):
        from engine.types import Event, Stats

        question = request.messages[-1].text
        answer = _text(random.Random(question), self.lines, 12)
        cuts = [len(answer) * n // self.pieces for n in range(self.pieces + 1)]
        events = [Event("answer", text=answer[a:b]) for a, b in pairwise(cuts)]
        events.append(Event("done", stats=Stats(
            answer_tokens=len(answer.split()), time_to_first_token_s=0.1, duration_s=2.0,
            seed=request.sampling.seed)))
        return iter(events)

    def capabilities(self):
        from engine.types import Capabilities

        return Capabilities(model_id="bench/model", family="bench", thinking=False,
                            multi_image=False, max_images=1, context_length=4096)

    def queue_position(self, request_id: str) -> int | None:
        return None

    def cancel(self, request_id: str) -> None:
        pass


def studio_for(store, lines: list[str], partials: int):
    """The app's own turn logic on `store`, saving the partial answer at every event (the app
    saves about once a second while an answer streams), so `partials` events give `partials`
    saves."""
    from studio.turns import Studio

    return Studio(InstantEngine(lines, partials), store, save_interval_s=0.0)


def log_turn(studio, client_key: str, index: int, lines: list[str]) -> float:
    """One consented turn about a new photo, asked through the Studio; returns its seconds."""
    from engine.types import Sampling
    from studio.turns import ChatState, TurnOptions

    question = _text(random.Random(index), lines, 1)
    image = _photo(index)
    state = ChatState(client_key=client_key, consented=True)
    options = TurnOptions(sampling=Sampling(temperature=0.0, max_new_tokens=64, seed=7))
    started = time.perf_counter()
    for _ in studio.ask(state, question, [image], options):
        pass
    return time.perf_counter() - started


def turn_costs(store, turns: int, partials: int, lines: list[str]) -> list[list]:
    studio = studio_for(store, lines, partials)
    store.timings.clear()
    totals = [log_turn(studio, "solo-writer", index, lines) for index in range(turns)]
    timings = {**store.timings, "turn": totals}
    return [[name, len(timings[name]), fixed(percentile(timings[name], 50) * 1000, 2),
             fixed(percentile(timings[name], 95) * 1000, 2)] for name in (*STEPS, "turn")]


def concurrent_writers(store, writers: int, turns_each: int, partials: int,
                       lines: list[str], first_index: int) -> list:
    studio = studio_for(store, lines, partials)
    store.timings.clear()
    totals: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    gate = threading.Barrier(writers + 1)

    def writer(number: int) -> None:
        mine: list[float] = []
        gate.wait()
        for turn in range(turns_each):
            index = first_index + number * turns_each + turn
            try:
                mine.append(log_turn(studio, f"writer-{number}", index, lines))
            except Exception as exc:  # counted: "database is locked" would show up here
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
        with lock:
            totals.extend(mine)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    gate.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    partial_saves = store.timings["save_partial"]
    return [writers, len(totals), len(errors), fixed(len(totals) / wall),
            ms(percentile(totals, 50)), ms(percentile(totals, 95)),
            fixed(percentile(partial_saves, 50) * 1000, 1),
            fixed(percentile(partial_saves, 95) * 1000, 1),
            fixed(max(partial_saves, default=float("nan")) * 1000, 1)]


# -- 3: exporting many pairs -----------------------------------------------------------------


def _small_png(index: int) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 72), (index % 251, (index // 251) % 251, (index * 7) % 251))
    ImageDraw.Draw(image).text((4, 4), str(index), fill=(255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build_pairs(path: Path, pairs: int, lines: list[str]) -> float:
    """A database of `pairs` liked/disliked answer pairs, each about its own image."""
    from storage import ImageBlob, Store
    from testing.data import ask, rate_pair

    rng = random.Random(pairs)
    started = time.perf_counter()
    with Store(path) as store:
        for index in range(pairs):
            key = f"user-{index % 200}"
            conversation, question = ask(
                store, key, _text(rng, lines, 1), image=ImageBlob(_small_png(index), "PNG", 96, 72),
                title=f"pair {index}", consent=CONSENT)
            liked, disliked = _text(rng, lines, 8), _text(rng, lines, 8)
            rate_pair(store, key, conversation, question, liked, disliked,
                      reasons=["Incomplete"], model_id="bench/model",
                      sampling={"temperature": 0.7})
    return time.perf_counter() - started


def pairs_database(pairs: int, lines: list[str]) -> tuple[Path, float | None]:
    """The cached database of `pairs` pairs; build seconds when it was built now, else None."""
    folder = bench_cache_dir() / f"pairs-{pairs}-v{FIXTURE_VERSION}"
    marker = folder / "complete.txt"
    if marker.is_file():
        return folder / "studio.db", None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    seconds = build_pairs(folder / "studio.db", pairs, lines)
    marker.write_text(f"{pairs} pairs in {seconds:.1f} s\n")
    return folder / "studio.db", seconds


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def export_all(db_path: Path, formats: list[str], workdir: Path) -> list[list]:
    from exports.formats import export
    from storage import Store

    rows = []
    # recover=False: opened as a second process would open the app's live database.
    with Store(db_path, recover=False) as store:
        for fmt in formats:
            out = workdir / fmt
            started = time.perf_counter()
            result = export(store, fmt, out)
            seconds = time.perf_counter() - started
            rows.append([fmt, result.total, result.images, fixed(seconds, 1),
                         fixed(result.total / seconds, 0), fixed(_folder_bytes(out) / 1e6, 1)])
            shutil.rmtree(out, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    from engine.tiny.common import corpus
    from exports.formats import FORMATS

    parser = argparse.ArgumentParser(prog="python -m bench.storage",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--partials", type=int, default=5)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--turns-per-writer", type=int, default=15)
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    args = parser.parse_args(argv)
    lines = corpus(400)
    print_machine("Storage: logging turns, concurrent writers, export")
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp:
        work = Path(tmp)
        with timed_store(work / "turns" / "studio.db") as store:
            rows = turn_costs(store, args.turns, args.partials, lines)
            print_table(f"One turn, {args.turns} turns, {args.partials} partial saves each "
                        "(ms)", ["step", "calls", "p50 ms", "p95 ms"], rows)
            writer_rows = []
            next_index = args.turns
            for writers in sorted({1, args.writers}):
                writer_rows.append(concurrent_writers(
                    store, writers, args.turns_per_writer * args.writers // writers,
                    args.partials, lines, next_index))
                next_index += args.turns_per_writer * args.writers
            print(f"- load average after the writers: {load_average()}\n")
            print_table(f"Concurrent writers on one Store, {args.turns_per_writer * args.writers} "
                        "turns in all", ["writers", "turns", "errors", "turns/s", "turn p50 ms",
                                         "turn p95 ms", "save_partial p50 ms",
                                         "save_partial p95 ms", "save_partial max ms"],
                        writer_rows)
        db_path, built = pairs_database(args.pairs, lines)
        if built is None:
            print(f"- {args.pairs} pairs: cached database {db_path}")
        else:
            print(f"- {args.pairs} pairs built through the Store API in {built:.1f} s "
                  f"({args.pairs / built:.0f} pairs/s, 9 transactions each); {db_path}")
        print(f"- database {db_path.stat().st_size / 1e6:.1f} MB; load average before export: "
              f"{load_average()}\n", flush=True)
        rows = export_all(db_path, args.formats, work / "export")
        print_table(f"Export of {args.pairs} pairs", ["format", "examples", "images",
                                                      "seconds", "examples/s", "MB written"],
                    rows)
        print(f"- load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
