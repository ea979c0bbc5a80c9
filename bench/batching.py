"""Batching in the engine itself: 1-16 users at once, one request at a time vs decoded together.

For each `--max-batch` (default 1, then 8) a `LocalEngine` loads the model (`--model tiny |
medium`, or a checkpoint folder) and, for each user count, that many threads released
together each ask `--questions` questions one after another (the one workload of
`bench.workload`: a 640x480 image, greedy, thinking off, `--max-new-tokens` tokens). Per
setting: aggregate tokens/s (all tokens over the wall time), time to first token p50 / p95
(from asking to the first answer text, waiting in line included), decode speed per stream, and
the largest batch the scheduler ran.

The last table checks the targets for batching: with 8 users, aggregate tokens/s at least 4x
one user's, and p95 time to first token at most 2x one user's. This runs in-process, without
the page: `bench.concurrency` measures the same through the running app.

    python -m bench.batching [--model tiny|medium|PATH] [--users 1 4 8 16] [--max-batch 1 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
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
from bench.workload import ask_engine, crowd


def measure(engine, image, users: int, questions: int, max_new_tokens: int) -> dict:
    started = time.perf_counter()
    outcomes = crowd(engine, image, users, questions, max_new_tokens)
    wall = time.perf_counter() - started
    good = [o for o in outcomes if o[4] is None and o[3] is not None]
    ttfts = [first - begun for begun, first, *_ in good if first is not None]
    tokens = sum(stats.total_tokens for *_, stats, _ in good)
    return {
        "users": users, "requests": len(outcomes), "errors": len(outcomes) - len(good),
        "aggregate": tokens / wall, "ttft_p50": percentile(ttfts, 50),
        "ttft_p95": percentile(ttfts, 95),
        "stream": percentile([stats.tokens_per_s for *_, stats, _ in good], 50),
        "wall": wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batching",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny",
                        help=f"{' or '.join(MODELS)}, or a checkpoint folder")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if any)")
    parser.add_argument("--quantize", default="none", choices=["auto", "4bit", "8bit", "none"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    quiet_transformers()
    from engine.batching import BatchLimits
    from engine.images import ImagePolicy, load_image
    from engine.local import LocalEngine

    print_machine("Batching: users at once against the engine in this process")
    path = model_path(args.model) if args.model in MODELS else args.model
    print(f"- model {args.model} ({path}), quantization {args.quantize}; {args.questions} "
          f"questions per user; greedy, {args.max_new_tokens} new tokens, thinking off; torch "
          f"{args.threads} thread(s) on the CPU\n", flush=True)
    results: dict[int, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        image = load_image(str(scene_image(Path(tmp) / "scene.png")), ImagePolicy())
        for max_batch in args.max_batch:
            engine = LocalEngine(path, quantize=args.quantize, device=args.device,
                                 batch_limits=BatchLimits(max_batch_size=max_batch))
            engine.load()
            for _ in range(2):
                ask_engine(engine, image, args.max_new_tokens)  # warm-up
            rows = []
            for users in args.users:
                before = load_average()
                row = measure(engine, image, users, args.questions, args.max_new_tokens)
                row["peak"] = engine.peak_batch_size
                rows.append(row)
                print(f"- max batch {max_batch}, {users} users: load average before {before}, "
                      f"after {load_average()}", flush=True)
            results[max_batch] = rows
            engine.close()  # the next setting loads the model again
    print()
    for max_batch, rows in results.items():
        print_table(f"Max batch {max_batch}",
                    ["users", "requests", "errors", "aggregate tok/s", "TTFT p50 ms",
                     "TTFT p95 ms", "stream tok/s p50", "largest batch so far", "wall s"],
                    [[r["users"], r["requests"], r["errors"], fixed(r["aggregate"]),
                      ms(r["ttft_p50"]), ms(r["ttft_p95"]), fixed(r["stream"]), r["peak"],
                      fixed(r["wall"])] for r in rows])
    targets = []
    for max_batch, rows in results.items():
        by_users = {r["users"]: r for r in rows}
        if 1 in by_users and 8 in by_users:
            one, eight = by_users[1], by_users[8]
            speedup = eight["aggregate"] / one["aggregate"]
            ttft_ratio = eight["ttft_p95"] / one["ttft_p95"]
            targets.append([max_batch, fixed(speedup, 2), "yes" if speedup >= 4 else "no",
                            fixed(ttft_ratio, 2), "yes" if ttft_ratio <= 2 else "no"])
    if targets:
        print_table("Targets at 8 users, against 1 user of the same setting",
                    ["max batch", "aggregate tok/s x", ">= 4x", "TTFT p95 x", "<= 2x"],
                    targets)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
