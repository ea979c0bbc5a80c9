"""Stop on ZeroGPU: the answer runs in a process `spaces` forks, where the app's cancel
cannot reach the engine; it must still stop there, soon, with the engine's real counts.

The real package in its ZeroGPU mode needs a GPU to run the worker (tests/app/test_zerogpu.py
runs it where there is one). Here `ForkingGPU` does what it does around the call: the
decorated generator runs in a process forked from the app's, after the model was loaded,
and its events come back through a queue.
"""

from __future__ import annotations

import multiprocessing

from engine.batching import BatchLimits
from engine.local import LocalEngine
from engine.types import GenerationRequest, Message, Sampling
from engine.zerogpu import ZeroGPUEngine

MAX_NEW = 400


class ForkingGPU:
    """`spaces.GPU(duration=...)` as ZeroGPU runs it: each call in a forked process."""

    @staticmethod
    def GPU(duration):  # noqa: N802 - the package's name
        def decorate(function):
            def call(*args):
                context = multiprocessing.get_context("fork")
                events = context.Queue()

                def work():
                    for event in function(*args):
                        events.put(event)
                    events.put(None)

                worker = context.Process(target=work, daemon=True)
                worker.start()
                try:
                    while (event := events.get(timeout=60)) is not None:
                        yield event
                finally:
                    worker.join(timeout=120)
                    if worker.is_alive():
                        worker.kill()
            return call
        return decorate


def test_stop_reaches_the_answer_in_the_forked_worker():
    # One request at a time, as the app builds it on ZeroGPU: no scheduler thread, which a
    # forked process would not have.
    inner = LocalEngine("tiny-random", quantize="none", device="cpu",
                        batch_limits=BatchLimits(max_batch_size=1))
    inner.load()
    engine = ZeroGPUEngine(inner, ForkingGPU, max_new_tokens_limit=MAX_NEW)
    request = GenerationRequest((Message("user", "Describe the sky."),),
                                sampling=Sampling(max_new_tokens=MAX_NEW, temperature=0.0),
                                thinking=False)
    done, answer_events = None, 0
    for event in engine.stream(request):
        if event.kind == "answer":
            answer_events += 1
            if answer_events == 1:
                engine.cancel(request.request_id)
        elif event.kind == "done":
            done = event
    inner.close()
    assert done is not None and done.stats.finish_reason == "cancelled"
    # The worker's engine stopped it, with its own count of what it generated.
    assert 0 < done.stats.answer_tokens < MAX_NEW
