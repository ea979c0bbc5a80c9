"""What one redraw of a streaming answer costs the web server, by length of the conversation.

A conversation of N finished turns (each a 64x48 image, a question and a Markdown answer of
about 80 words) plus one answer streaming is drawn as the chat handler draws it while
streaming (`ui.common.view(..., streaming=True)`), then put through Gradio's own output
processing for those components (`Blocks.postprocess_data`: the chatbot's postprocess and
its file checks) and Gradio's streaming diff against the previous redraw (`utils.diff`, what
goes over the wire). Each redraw the streaming answer grows by a few words, as it does between
two redraws of a real answer. The images live in a folder registered as static, as the app's
session folders are.

Reported: the median time per redraw of the three steps and in all, over `--reps` redraws,
for each N. No model runs; one thread.

    python -m bench.redraw [--turns 1 10 30] [--reps 200]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench.common import fixed, load_average, median, print_machine, print_table

WORDS = "An answer with *some* Markdown, a list:\n\n- one\n- two\n\nand `code`. " * 6


def conversation(folder: Path, turns: int):
    from PIL import Image

    from engine.types import Message, Stats
    from studio.turns import ChatState, Turn, TurnUpdate

    state = ChatState()
    for index in range(turns):
        path = folder / f"image-{index}.png"
        Image.new("RGB", (64, 48), (index * 7 % 256, 90, 160)).save(path)
        done = TurnUpdate(answer=f"{index}. {WORDS}", done=True,
                          stats=Stats(answer_tokens=80, duration_s=1.0,
                                      time_to_first_token_s=0.1))
        state.turns.append(Turn(Message("user", f"What is in picture {index}?"), [str(path)],
                                answer=done))
    state.turns.append(Turn(Message("user", "And this one?"), [str(path)],
                            answer=TurnUpdate(answer="")))
    return state


def measure(turns: int, reps: int) -> dict[str, float]:
    import gradio as gr
    from gradio import utils

    from ui.common import view

    folder = Path(tempfile.mkdtemp(prefix="redraw-"))
    gr.set_static_paths([folder])
    with gr.Blocks() as demo:
        outputs = [gr.Chatbot(), gr.State(), gr.Row(), gr.Markdown(), gr.Button(), gr.Button()]
        gr.Button().click(lambda: None, None, outputs)
    block_fn = next(iter(demo.fns.values()))
    state = conversation(folder, turns)
    streaming = state.turns[-1].answer
    times: dict[str, list[float]] = {"draw": [], "gradio": [], "diff": [], "total": []}
    previous = None
    loop = asyncio.new_event_loop()
    for rep in range(reps):
        streaming.answer += f"word{rep} "
        started = time.perf_counter()
        shown = list(view(state, streaming=True))
        drawn = time.perf_counter()
        processed = loop.run_until_complete(demo.postprocess_data(block_fn, shown, None))
        gradio_done = time.perf_counter()
        if previous is not None:
            utils.diff(previous, processed)
        ended = time.perf_counter()
        previous = processed
        times["draw"].append(drawn - started)
        times["gradio"].append(gradio_done - drawn)
        times["diff"].append(ended - gradio_done)
        times["total"].append(ended - started)
    loop.close()
    return {name: median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, nargs="+", default=[1, 10, 30])
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print_machine("bench.redraw")
    rows = []
    for turns in args.turns:
        result = measure(turns, args.reps)
        rows.append([turns, *(fixed(result[k] * 1000, 2) for k in
                              ("draw", "gradio", "diff", "total"))])
    print_table("Server time per redraw while streaming (median, ms)",
                ["finished turns", "draw (view)", "Gradio postprocess", "diff", "total"], rows)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
