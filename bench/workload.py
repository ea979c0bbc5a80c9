"""The question every benchmark asks, and how to ask it of an engine and of the running app.

One workload everywhere, so the figures compare: a 640x480 PNG (`common.scene_image`) and
`QUESTION`, greedy, thinking off, a fixed number of new tokens (random models never stop
early), seed `SEED`, each time in a new conversation. Which model answers is the caller's
choice (`bench.models.model_path`); this module imports no other benchmark module.

- `engine_request(image, n)` is the `GenerationRequest` for an engine's `stream()`,
  `ask_engine` times one such question in-process and `crowd` has several users ask at once;
- `chat_arguments(image_path, n)` are the inputs of the app's "chat" endpoint for
  `gradio_client`, `fresh_session(client, saving)` starts a new session and so a new
  conversation (consent on or off), `new_chat(client)` a new conversation in the same session,
  `answer_of(output)` reads the answer text out of one streamed output,
  `shows_question(output)` and `shows_answer(output)` say whether it shows the question and
  any answer text yet, and `STATS_LINE` reads the token count and speed out of the line the
  app writes under a finished answer.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

QUESTION = "What is in the picture? Describe it."
SEED = 7
# "<sub>64 tokens · 38.3 tok/s · 1.8 s · model · ...</sub>" under a finished answer.
STATS_LINE = re.compile(r"<sub>(\d+) tokens(?: · ([\d.]+) tok/s)?")


def engine_request(image, max_new_tokens: int):
    from engine.types import GenerationRequest, Message, Sampling

    return GenerationRequest(
        messages=(Message("user", QUESTION, (image,)),), thinking=False,
        sampling=Sampling(max_new_tokens=max_new_tokens, temperature=0.0, seed=SEED))


def ask_engine(engine, image, max_new_tokens: int):
    """One question to an engine in this process: (started, first answer text, done, stats,
    error), times from `time.perf_counter`."""
    request = engine_request(image, max_new_tokens)
    started = time.perf_counter()
    first = None
    stats = error = None
    for event in engine.stream(request):
        if event.kind == "answer" and first is None and event.text.strip():
            first = time.perf_counter()
        elif event.kind == "done":
            stats, error = event.stats, event.error
    return started, first, time.perf_counter(), stats, error


def crowd(engine, image, users: int, questions: int, max_new_tokens: int) -> list:
    """`users` threads released together, each asking `questions` questions one after another;
    every outcome as `ask_engine` gives it."""
    results = []
    lock = threading.Lock()
    gate = threading.Barrier(users + 1)

    def user() -> None:
        gate.wait()
        for _ in range(questions):
            outcome = ask_engine(engine, image, max_new_tokens)
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=user) for _ in range(users)]
    for thread in threads:
        thread.start()
    gate.wait()
    for thread in threads:
        thread.join()
    return results


def chat_arguments(image_path: Path, max_new_tokens: int) -> list:
    """Inputs of the "chat" endpoint: message, thinking, budget, max new tokens, temperature,
    top p, top k, seed, adapter (the session's state is the client's session)."""
    from gradio_client import handle_file

    message = {"text": QUESTION, "files": [handle_file(str(image_path))]}
    return [message, False, 0, max_new_tokens, 0.0, 0.9, 0, SEED, "Base model"]


def fresh_session(client, saving: bool) -> None:
    """A new session, hence a new conversation; "Save my data" ticked when `saving`."""
    client.reset_session()
    if saving:
        client.predict(True, api_name="/set_consent")


def new_chat(client) -> None:
    """A new conversation in the same session, as the page's "New chat" button starts one
    ("Save my data" stays as it was)."""
    client.predict(api_name="/start_new")


def answer_of(output) -> str:
    """The last assistant message's text in one streamed output of the chat endpoint."""
    messages = output[0] if isinstance(output, tuple | list) and output else None
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "assistant":
            content = message.get("content")
            if isinstance(content, list):
                return "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return content if isinstance(content, str) else ""
    return ""


def shows_question(output) -> bool:
    """True once an output's chat shows `QUESTION` as a user message."""
    messages = output[0] if isinstance(output, tuple | list) and output else None
    if not isinstance(messages, list):
        return False
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            parts = content if isinstance(content, list) else [{"text": content}]
            if any(isinstance(p, dict) and QUESTION in str(p.get("text") or "") for p in parts):
                return True
    return False


def shows_answer(output) -> bool:
    """True once an output shows answer text (not the "…" placeholder of an empty answer)."""
    from ui.render import plain_text

    return bool(plain_text(answer_of(output)).strip("… "))
