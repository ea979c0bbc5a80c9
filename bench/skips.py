"""What Gradio's output processing costs the server per output, by what a handler returns.

A handler leaves an output as it is with `gr.skip()`, sets its value, or updates its
properties with a component (`gr.Chatbot(value=..., feedback_value=...)`). Gradio treats a
skip as an empty update: it builds the component anew from its arguments and works out its
configuration, including, for a component with a data model (the chat, the question box),
its API schema. That runs on the event loop that serves every visitor. A value goes through
the component's `postprocess` on a worker thread instead. This times each, for the kinds of
output the page's events name, through `Blocks.postprocess_data` as Gradio calls it for an
event, less the cost of an event with no outputs.

    python -m bench.skips [--reps 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from statistics import median

from bench.common import print_machine, print_table


def _messages(turns: int) -> list[dict]:
    messages = []
    for i in range(turns):
        messages += [{"role": "user", "content": f"question {i} " * 10},
                     {"role": "assistant", "content": f"answer {i} " * 60}]
    return messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.skips",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args(argv)
    import gradio as gr
    from gradio.state_holder import SessionState

    print_machine("Output processing: a skip, a value or an update, per kind of output")
    with gr.Blocks() as demo:
        chat = gr.Chatbot()
        box = gr.MultimodalTextbox()
        label = gr.Markdown()
        button = gr.Button("Next")
        radio = gr.Radio(choices=[(f"conversation {i}", str(i)) for i in range(50)])
        with gr.Row() as row:
            pass
        trigger = gr.Button()
        none = trigger.click(lambda: None, None, [])
        events = {name: trigger.click(lambda: None, None, [output]) for name, output in (
            ("Chatbot", chat), ("MultimodalTextbox", box), ("Markdown", label),
            ("Button", button), ("Radio, 50 choices", radio), ("Row", row))}
    functions = {name: demo.fns[event["id"]] for name, event in events.items()}
    ten = _messages(5)
    returns = {
        "Chatbot": [("skip", gr.skip()), ("10 messages", ten), ("[]", []),
                    ("update: 10 messages and their thumbs",
                     gr.Chatbot(value=ten, feedback_value=[None] * 5))],
        "MultimodalTextbox": [("skip", gr.skip()), ("None", None)],
        "Markdown": [("skip", gr.skip()), ("value", "Answer 2 of 3")],
        "Button": [("skip", gr.skip()), ("update: interactive=False",
                                         gr.Button(interactive=False))],
        "Radio, 50 choices": [("skip", gr.skip()), ("None", None)],
        "Row": [("skip", gr.skip()), ("update: visible=False", gr.Row(visible=False))],
    }

    async def timed(fn, prediction) -> float:
        state = SessionState(demo)
        times = []
        for _ in range(args.reps):
            start = time.perf_counter()
            await demo.postprocess_data(fn, prediction, state)
            times.append((time.perf_counter() - start) * 1000)
        return median(times)

    async def measure() -> list[list]:
        base = await timed(demo.fns[none["id"]], [])
        return [[name, what, f"{await timed(functions[name], value) - base:.3f}"]
                for name, kinds in returns.items() for what, value in kinds]

    print(f"- {args.reps} calls each; median ms, less an event with no outputs\n")
    print_table("Per output", ["output", "returned", "ms"], asyncio.run(measure()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
