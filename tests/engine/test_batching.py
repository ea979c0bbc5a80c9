"""Step-level batching on real tiny checkpoints: requests that arrive together or mid-answer
share decode steps, and each still gets the answer it would get alone (greedy), its own seed,
thinking budget and stop. Limits bound the batch without starving anyone, and running out of
memory fails only the request that must fail."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import torch
from PIL import Image

from engine.batching import BatchLimits
from engine.families import FAMILIES
from engine.local import OUT_OF_MEMORY_MESSAGE, LocalEngine
from engine.tiny import TINY_FAMILIES, TINY_NOTES
from engine.types import GenerationRequest, Message, Sampling
from testing.events import collect
from testing.waiting import wait_until

BATCHED = {family.name for family in FAMILIES if family.batch_positions}
BATCHED_FAMILIES = [family for family in TINY_FAMILIES if TINY_NOTES[family].family in BATCHED]
# Checkpoints whose real generation_config.json carries sampling defaults that a request
# leaves alone: Qwen2.5-VL repetition_penalty 1.05; Qwen3-VL top_k 20; Qwen3.5 top_k 20.
REAL_SAMPLING_DEFAULTS = ["qwen2_5_vl", "qwen3_vl", "qwen3_5"]


def _engine(ref: str, **limits) -> LocalEngine:
    engine = LocalEngine(ref, quantize="none", device="cpu",
                         batch_limits=BatchLimits(**limits) if limits else None)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def engines():
    """(batched, one-at-a-time) engines per family, loaded on first use."""
    loaded: dict[str, tuple[LocalEngine, LocalEngine]] = {}

    def get(family: str) -> tuple[LocalEngine, LocalEngine]:
        if family not in loaded:
            ref = f"tiny-random:{family}"
            loaded[family] = (_engine(ref), _engine(ref, max_batch_size=1))
        return loaded[family]

    return get


def _request(text="What is in the picture?", size=(64, 48), thinking=False, budget=None,
             max_new=24, temperature=0.0, seed=1, **sampling) -> GenerationRequest:
    images = (Image.new("RGB", size, (120, 40, 200)),) if size else ()
    return GenerationRequest(
        messages=(Message("user", text, images),), thinking=thinking, thinking_budget=budget,
        sampling=Sampling(max_new_tokens=max_new, temperature=temperature, seed=seed,
                          **sampling))


def _collect(events) -> dict:
    texts, kinds, done = collect(events)
    return {**texts, "kinds": kinds, "done": done}


def _answer(result: dict) -> tuple[str, str, str, str | None]:
    done = result["done"]
    return result["reasoning"], result["answer"], done.stats.finish_reason, done.error


def _together(engine: LocalEngine, requests: list[GenerationRequest],
              queued_first: bool = False) -> list[dict]:
    """Run `requests` from one thread each, all started at once; results in order.

    `queued_first`: hold the model (as scoring does) until every request waits in line, in
    the order of `requests`, so that the scheduler takes them from one known line at once."""
    results: list = [None] * len(requests)

    def run(index: int) -> None:
        results[index] = _collect(engine.stream(requests[index]))
        results[index]["finished_at"] = time.perf_counter()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(requests))]
    with contextlib.ExitStack() as holding:
        if queued_first:
            holding.enter_context(engine.holding_model(requests[0].messages))
        for index, thread in enumerate(threads):
            thread.start()
            if queued_first:
                # Each in line before the next starts: the line is in the order of `requests`.
                assert wait_until(
                    lambda i=index: engine.queue_position(requests[i].request_id) == i + 1)
    for thread in threads:
        thread.join(timeout=300)
    assert all(r is not None for r in results), "a request never finished"
    return results


def _mixed_requests(needs_image: bool) -> list[GenerationRequest]:
    # Different prompt lengths, image sizes, and one without an image: rows of unequal length.
    return [
        _request(),
        _request("Describe every part of it in detail, please, one by one.", size=(96, 64)),
        _request("hello there", size=(32, 32) if needs_image else None),
        _request("And the colours?", size=(48, 48), max_new=10),
    ]


@pytest.mark.parametrize("family", BATCHED_FAMILIES)
def test_batched_greedy_answers_equal_answers_alone(engines, family):
    batched, serial = engines(family)
    assert batched.batching and not serial.batching
    requests = _mixed_requests(batched.family.needs_image)
    # Alone, through transformers' own `generate`: the reference.
    alone = [_answer(_collect(serial.stream(r))) for r in requests]
    # (A checkpoint that always thinks may use every token reasoning.)
    assert all(a[3] is None and (a[0] + a[1]) for a in alone)
    peak_before = batched.peak_batch_size
    together = [_answer(r) for r in _together(batched, requests)]
    assert together == alone
    assert batched.peak_batch_size > 1 or peak_before > 1


def test_requests_joining_a_running_batch_answer_as_alone(engines):
    batched, serial = engines("qwen3_5")
    long = _request("Tell me a long story about it.", max_new=120)
    joiners = [_request("What shape?", size=(40, 40)), _request("hi", size=None, max_new=8)]
    alone = [_answer(_collect(serial.stream(r))) for r in [long, *joiners]]

    long_started = time.perf_counter()
    events = batched.stream(long)
    first = next(events)  # the long answer is decoding now
    assert batched.queue_position(long.request_id) == 0
    joined = _together(batched, joiners)
    rest = _collect(events)
    rest[first.kind] = first.text + rest[first.kind]
    assert [_answer(rest), *map(_answer, joined)] == alone
    assert rest["done"].stats.total_tokens == 120
    assert batched.peak_batch_size >= 2
    # The joiners did not wait for the long answer: they were done while it was still being
    # generated (its events waited, unread, until now).
    long_generated_by = long_started + rest["done"].stats.duration_s
    assert max(r["finished_at"] for r in joined) < long_generated_by


def test_thinking_budgets_apply_per_request_in_a_batch(engines):
    batched, serial = engines("qwen3_5")
    requests = [_request(thinking=True, budget=6, max_new=40),
                _request(thinking=True, budget=None, max_new=40),
                _request(thinking=False, max_new=20)]
    alone = [_collect(serial.stream(r)) for r in requests]
    together = _together(batched, requests)
    assert [_answer(r) for r in together] == [_answer(r) for r in alone]
    budgeted, free, plain = (r["done"].stats for r in together)
    assert budgeted.reasoning_tokens <= 6
    assert budgeted.budget_exhausted and not free.budget_exhausted
    assert plain.reasoning_tokens == 0


@pytest.mark.parametrize("family", REAL_SAMPLING_DEFAULTS)
def test_seeded_sampling_gives_the_same_answer_alone_or_batched(engines, family):
    batched, serial = engines(family)
    sampled = [_request(temperature=1.0, top_p=0.9, seed=seed, max_new=20) for seed in (5, 6, 7)]
    # Alone through `generate`, which reads the checkpoint's generation config itself.
    alone = [_answer(_collect(serial.stream(r))) for r in sampled]
    together = [_answer(r) for r in _together(batched, sampled)]
    assert together == alone
    assert len({a[1] for a in alone}) > 1  # the seeds matter


@pytest.mark.parametrize("family", REAL_SAMPLING_DEFAULTS)
def test_the_checkpoints_sampling_defaults_apply_unless_the_request_overrides_them(
        engines, family):
    from engine.sampling import resolve

    batched, _ = engines(family)
    defaults = batched.model.generation_config
    kept = resolve(Sampling(temperature=1.0, top_k=0), defaults)
    assert kept.top_k == (defaults.top_k or None)
    assert kept.repetition_penalty == (
        defaults.repetition_penalty if defaults.repetition_penalty not in (None, 1.0) else None)
    overridden = resolve(Sampling(temperature=1.0, top_k=3, repetition_penalty=1.0), defaults)
    assert (overridden.top_k, overridden.repetition_penalty) == (3, None)
    if family == "qwen2_5_vl":
        assert kept.repetition_penalty == 1.05
    else:
        assert kept.top_k == 20


def test_a_checkpoint_penalty_is_applied_in_both_paths_unless_overridden(engines):
    # A random model with a 151k vocabulary (Qwen2.5-VL, whose real penalty is 1.05) almost
    # never repeats a token, so no penalty changes its answer. The tiny LLaVA repeats itself;
    # given a checkpoint penalty, its answers show whether the penalty is applied.
    batched, serial = engines("llava")
    configs = [batched.model.generation_config, serial.model.generation_config]
    saved = [config.repetition_penalty for config in configs]
    try:
        for config in configs:
            config.repetition_penalty = 1.8
        default = _request(max_new=30)
        neutral = _request(max_new=30, repetition_penalty=1.0)
        stated = _request(max_new=30, repetition_penalty=1.8)
        alone = [_answer(_collect(serial.stream(r))) for r in (default, neutral, stated)]
        together = [_answer(r) for r in _together(batched, [default, neutral, stated])]
    finally:
        for config, value in zip(configs, saved, strict=True):
            config.repetition_penalty = value
    assert together == alone
    assert alone[0] == alone[2] != alone[1]


def test_a_cancelled_request_leaves_the_batch_and_the_others_go_on(engines):
    batched, serial = engines("qwen3_5")
    stopper = _request("Keep going.", max_new=4000)
    others = [_request(max_new=30), _request("Shapes?", size=(40, 56), max_new=30)]
    alone = [_answer(_collect(serial.stream(r))) for r in others]

    events = batched.stream(stopper)
    next(events)
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(_together(batched, others)),
                              daemon=True)
    thread.start()
    # Cancelled once the others decode beside it, so that it leaves a batch of three.
    assert wait_until(lambda: all(batched.queue_position(r.request_id) == 0 for r in others))
    batched.cancel(stopper.request_id)
    stopped = _collect(events)
    thread.join(timeout=120)
    assert stopped["done"].stats.finish_reason == "cancelled"
    assert stopped["done"].stats.total_tokens < 4000
    assert [_answer(r) for r in results] == alone


def test_a_closed_stream_frees_its_place(engines):
    batched, _ = engines("qwen3_5")
    request = _request(max_new=4000)
    events = batched.stream(request)
    next(events)
    events.close()  # what a closed browser tab does
    after = _collect(batched.stream(_request(max_new=5)))
    assert after["done"].stats.finish_reason == "length"
    assert batched.queue_position(request.request_id) is None


def test_batch_size_cap_holds_and_everyone_is_served_in_order():
    engine = _engine("tiny-random", max_batch_size=2)
    requests = [_request(max_new=40, seed=s) for s in range(5)]
    highest_place = 0
    watching = threading.Event()

    def watch():
        nonlocal highest_place
        while not watching.is_set():
            places = [engine.queue_position(r.request_id) for r in requests]
            if 0 in places:  # places told while a batch decodes, not while all were held
                highest_place = max(highest_place, *(place or 0 for place in places))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    results = _together(engine, requests, queued_first=True)
    watching.set()
    watcher.join(timeout=10)
    assert all(r["done"].error is None for r in results)
    assert engine.peak_batch_size == 2
    assert highest_place >= 1  # some waited in line beside the batch, and knew their place
    # First come, first served: the first two finish before the last one.
    assert max(results[0]["finished_at"], results[1]["finished_at"]) < results[4]["finished_at"]


def test_token_cap_runs_requests_that_fill_it_one_at_a_time_and_starves_none():
    # Each request reserves its prompt plus 40 new tokens, the whole cap: one at a time.
    engine = _engine("tiny-random")
    requests = [_request(max_new=40, seed=s) for s in range(3)]
    prompt = engine._build_inputs(requests[0].messages, False)[0]["input_ids"].shape[1]
    engine.close()
    engine = _engine("tiny-random", max_batch_tokens=prompt + 40)
    results = _together(engine, requests, queued_first=True)
    assert all(r["done"].error is None and r["answer"] for r in results)
    assert engine.peak_batch_size == 1


def test_out_of_memory_in_a_batch_fails_only_the_newest_request(engines):
    batched, serial = engines("qwen3_5")
    requests = [_request(max_new=40), _request("Colours?", max_new=40),
                _request("Shapes?", size=(40, 40), max_new=40)]
    alone = [_answer(_collect(serial.stream(r))) for r in requests]
    failures = []

    def three_is_too_many(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape == (3, 1):  # a decode step of three sequences
            failures.append(1)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = batched.model.register_forward_pre_hook(three_is_too_many, with_kwargs=True)
    try:
        results = _together(batched, requests, queued_first=True)
    finally:
        hook.remove()
    assert failures
    errors = [r["done"].error for r in results]
    # The last to arrive is the one that fails; the others answer as they would alone.
    assert errors == [None, None, OUT_OF_MEMORY_MESSAGE]
    assert [_answer(r) for r in results[:2]] == alone[:2]
    after = _collect(batched.stream(_request(max_new=5)))
    assert after["done"].error is None


def test_scoring_gets_the_model_between_batches(engines):
    batched, _ = engines("qwen3_5")
    running = batched.stream(_request(max_new=60))
    next(running)
    held = threading.Event()

    def score():
        messages = (Message("user", "What is in the picture?"),)
        with batched.holding_model(messages):
            held.set()

    thread = threading.Thread(target=score, daemon=True)
    thread.start()
    finished = _collect(running)
    assert held.wait(timeout=60), "the model was never handed over for scoring"
    assert finished["done"].error is None


def _waiting(name: str, tokens: int = 100, adapter: str | None = None, cancelled=False):
    # What the admission rule reads of a job; the rule runs no model.
    from types import SimpleNamespace

    flag = threading.Event()
    if cancelled:
        flag.set()
    return SimpleNamespace(request_id=name, reserved_tokens=tokens, adapter=adapter,
                           cancelled=flag)


def test_admission_keeps_arrival_order_and_lets_nothing_overtake():
    from engine.batching import BatchLimits, admit

    limits = BatchLimits(max_batch_size=3, max_batch_tokens=250)
    a, b, c, d = (_waiting(n) for n in "abcd")
    plan = admit([a, b, c, d], [], None, limits)
    assert [j.request_id for j in plan.group] == ["a", "b"] and plan.taken == 2  # tokens full
    big, small = _waiting("big", tokens=1000), _waiting("small", tokens=10)
    plan = admit([big, small], [], None, limits)
    assert plan.group == [big] and plan.taken == 1  # too big for any batch: runs alone
    plan = admit([small, big], [a], None, limits)
    assert plan.group == [small]  # big waits, and nothing behind it would overtake it
    plan = admit([b, c], [a, small, d], None, limits)
    assert plan.group == [] and plan.taken == 0  # no sequence left


def test_admission_waits_for_another_adapter_and_drops_cancelled_jobs():
    from engine.batching import BatchLimits, admit

    limits = BatchLimits(max_batch_size=8, max_batch_tokens=10_000)
    gone = _waiting("gone", cancelled=True)
    base, tuned, later = _waiting("base"), _waiting("tuned", adapter="t"), _waiting("later")
    plan = admit([gone, base, tuned, later], [], None, limits)
    assert plan.cancelled == [gone] and plan.group == [base] and plan.taken == 2
    assert plan.adapter is None
    plan = admit([tuned, later], [], None, limits)
    assert plan.group == [tuned] and plan.adapter == "t"
    plan = admit([later], [tuned], "t", limits)
    assert plan.group == [] and plan.adapter == "t"
