"""The local engine in its own process: the same answers as in-process, refusals with their
class, cancel, scoring, and a child that never outlives its parent and is restarted when it
dies on its own. Real child processes on the real tiny checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from engine.errors import EngineClosed, ModelLoadError, ModelNotReady, RequestError
from engine.process import ProcessEngine
from engine.types import GenerationRequest, Message, Sampling
from testing.events import collect
from testing.processes import process_alive
from testing.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
# Longer than any test waits for: an answer this long ends only when cancelled.
ENDLESS = 100_000


def _request(max_new=24, thinking=False, budget=None, seed=3, temperature=0.0, images=1,
             adapter=None) -> GenerationRequest:
    image = Image.new("RGB", (64, 48), (30, 120, 200))
    return GenerationRequest(
        messages=(Message("user", "What colour is it?", tuple(image for _ in range(images))),),
        thinking=thinking, thinking_budget=budget, adapter=adapter,
        sampling=Sampling(max_new_tokens=max_new, temperature=temperature, seed=seed))


@pytest.fixture(scope="module")
def process_engine():
    engine = ProcessEngine("tiny-random", quantize="none", device="cpu",
                           max_new_tokens_limit=ENDLESS)
    engine.load()
    yield engine
    engine.close()


def test_answers_and_capabilities_match_the_in_process_engine(process_engine, tiny_engine):
    assert process_engine.capabilities() == tiny_engine.capabilities()
    assert process_engine.pid != os.getpid() and process_engine.progress.stage == "ready"
    for request in (_request(), _request(thinking=True, budget=6, max_new=30),
                    _request(temperature=0.8, seed=11)):
        there, _, there_done = collect(process_engine.stream(request))
        here, _, here_done = collect(tiny_engine.stream(request))
        assert there == here
        assert there_done.error is None
        assert (there_done.stats.reasoning_tokens, there_done.stats.answer_tokens,
                there_done.stats.finish_reason, there_done.stats.budget_exhausted) == (
            here_done.stats.reasoning_tokens, here_done.stats.answer_tokens,
            here_done.stats.finish_reason, here_done.stats.budget_exhausted)


def test_refusals_arrive_before_any_event_with_their_own_class(process_engine):
    with pytest.raises(RequestError, match="No adapter named 'nope'"):
        process_engine.stream(_request(adapter="nope"))
    limit = process_engine.capabilities().max_images
    with pytest.raises(RequestError):
        process_engine.stream(_request(images=limit + 1))
    # The engine still answers afterwards.
    assert collect(process_engine.stream(_request(max_new=4)))[2].stats.answer_tokens == 4


def test_cancel_stops_a_running_answer(process_engine):
    request = _request(max_new=ENDLESS, temperature=0.9)
    events = process_engine.stream(request)
    first = next(events)
    assert first.kind in ("answer", "reasoning")
    process_engine.cancel(request.request_id)
    _, _, done = collect(events)
    assert done.stats.finish_reason == "cancelled"
    assert done.stats.total_tokens < ENDLESS


def test_a_closed_stream_cancels_its_answer(process_engine):
    request = _request(max_new=ENDLESS, temperature=0.9)
    events = process_engine.stream(request)
    next(events)
    events.close()
    # Cancelled in the model process: it leaves the batch, so the engine no longer knows it.
    assert wait_until(lambda: process_engine.queue_position(request.request_id) is None,
                      timeout=30)


def test_scores_match_the_in_process_engine(process_engine, tiny_engine):
    messages = _request().messages
    answers = ["blue", "a red square"]
    there = process_engine.score_answers(messages, answers)
    here = tiny_engine.score_answers(messages, answers)
    assert ([s.total_logprob for s in there]
            == pytest.approx([s.total_logprob for s in here], abs=1e-4))
    with pytest.raises(RequestError):
        process_engine.score_answers(messages, answers, adapter="nope")


def test_a_model_that_cannot_load_says_why_and_leaves_no_process(tmp_path):
    engine = ProcessEngine(str(tmp_path / "no-such-model"), quantize="none", device="cpu")
    with pytest.raises(ModelLoadError) as raised:
        engine.load()
    assert engine.load_error and engine.load_error in str(raised.value)
    assert not engine.ready and not process_alive(engine.pid)
    with pytest.raises(ModelNotReady, match="could not be loaded"):
        engine.stream(_request())
    engine.close()


def test_closing_ends_open_streams_and_stops_the_process():
    engine = ProcessEngine("tiny-random", quantize="none", device="cpu")
    engine.load()
    pid = engine.pid
    events = engine.stream(_request(max_new=ENDLESS, temperature=0.9))
    next(events)
    engine.close()
    _, _, done = collect(events)
    assert done.stats.finish_reason in ("cancelled", "error")
    assert not process_alive(pid)
    with pytest.raises(EngineClosed):
        engine.stream(_request())
    engine.close()  # again: nothing happens


def test_a_model_process_that_dies_ends_its_streams_and_is_restarted():
    engine = ProcessEngine("tiny-random", quantize="none", device="cpu")
    engine.load()
    try:
        pid = engine.pid
        events = engine.stream(_request(max_new=ENDLESS, temperature=0.9))
        next(events)
        os.kill(pid, signal.SIGKILL)  # as the kernel does when memory runs out
        _, _, done = collect(events)
        assert done.stats.finish_reason == "error"
        assert "stopped unexpectedly" in done.error
        assert wait_until(lambda: engine.ready and engine.pid != pid, timeout=120)
        assert collect(engine.stream(_request(max_new=4)))[2].error is None
    finally:
        engine.close()


def test_the_model_process_does_not_outlive_a_killed_parent(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import sys, threading
        from engine.process import ProcessEngine

        engine = ProcessEngine("tiny-random", quantize="none", device="cpu")
        engine.load()
        print(engine.pid, flush=True)
        threading.Event().wait()
    """))
    parent = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        child = int(parent.stdout.readline())
        assert process_alive(child)
    finally:
        parent.kill()
        parent.wait()
    assert wait_until(lambda: not process_alive(child), timeout=30)


def test_one_at_a_time_in_the_model_process_answers_as_in_process(tiny_engine):
    from engine.batching import BatchLimits

    engine = ProcessEngine("tiny-random", quantize="none", device="cpu",
                           batch_limits=BatchLimits(max_batch_size=1))
    assert engine.concurrency == 1
    engine.load()
    try:
        first, second = _request(), _request(temperature=0.8, seed=5)
        running = engine.stream(first)
        waiting = engine.stream(second)
        assert collect(running)[0] == collect(tiny_engine.stream(first))[0]
        assert collect(waiting)[0] == collect(tiny_engine.stream(second))[0]
    finally:
        engine.close()
