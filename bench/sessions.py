"""What idle visitors cost the server: resident memory after many sessions with images.

The real app (`python app.py --model tiny-random`) in a subprocess; `--sessions` visitors each
open a session of their own through `gradio_client`, ask one question about `--images`
different photo-sized PNGs (consent off, one new token) and then stay idle without closing the
session, as a tab left open does. The app's resident set size (VmRSS from /proc) is read after
the model has answered a warm-up session, and again once every session has had its answer.
The growth divided by the number of sessions is what one idle visitor costs; the script also
reports the bytes the app keeps on disk for the sessions (the `sessions` folder beside the
database) and what is left in Gradio's upload folder (Gradio stores identical uploads once).

`--app-root` runs another checkout's app.py (to compare with an earlier version).

    python -m bench.sessions [--sessions 100] [--images 8] [--app-root PATH]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.common import (
    ROOT,
    load_average,
    print_machine,
    print_table,
    running_app,
    scene_image,
)

QUESTION = "What is in these pictures?"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line")


def folder_mib(folder: Path) -> float:
    if not folder.exists():
        return 0.0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def photos(folder: Path, count: int) -> list[Path]:
    """`count` different 640x480 PNGs (sizes differ slightly so no two are the same)."""
    return [scene_image(folder / f"photo-{n}.png", (640 - 8 * n, 480)) for n in range(count)]


def ask(client, images: list[Path]) -> None:
    from gradio_client import handle_file

    message = {"text": QUESTION, "files": [handle_file(str(p)) for p in images]}
    client.predict(message, False, 0, 1, 0.0, 0.9, 0, 7, "Base model", api_name="/chat")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sessions")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--app-root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    from gradio_client import Client

    print_machine("Idle sessions")
    with tempfile.TemporaryDirectory(prefix="vqa-bench-sessions-") as tmp:
        work = Path(tmp)
        gradio_dir = work / "gradio"
        images = photos(work / "photos", args.images)
        os.environ["GRADIO_TEMP_DIR"] = str(gradio_dir)  # inherited by the app
        with running_app("tiny-random", work / "app", root=args.app_root.resolve()) as app:
            pid = app.process.pid
            client = Client(app.url, verbose=False)
            client.reset_session()
            ask(client, images)  # warm-up: the first prefill allocates the model's buffers
            before = rss_mib(pid)
            started = time.monotonic()
            print(f"load average before: {load_average()}")
            for _ in range(args.sessions):
                client.reset_session()  # a new visitor; the previous session stays open
                ask(client, images)
            elapsed = time.monotonic() - started
            after = rss_mib(pid)
            print(f"load average after: {load_average()}")
            client.close()
            kept = folder_mib(app.db_path.parent / "sessions")
            uploads = folder_mib(gradio_dir)
        growth = after - before
        print_table(
            f"{args.sessions} idle sessions, {args.images} images each (app at {args.app_root})",
            ["RSS after warm-up (MiB)", "RSS after (MiB)", "growth (MiB)",
             "per session (MiB)", "sessions folder (MiB)", "Gradio's upload folder (MiB)",
             "time (s)"],
            [[f"{before:.0f}", f"{after:.0f}", f"{growth:.0f}",
              f"{growth / args.sessions:.2f}", f"{kept:.1f}", f"{uploads:.1f}",
              f"{elapsed:.0f}"]])


if __name__ == "__main__":
    main()
