"""The local engine on real tiny checkpoints: streaming, thinking, budget, stop, seeds, queue,
sampling settings and failures."""

from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image

from engine.batching import BatchLimits
from engine.errors import ModelNotReady, RequestError
from engine.images import ImagePolicy, load_image
from engine.local import OUT_OF_MEMORY_MESSAGE, LocalEngine
from engine.types import GenerationRequest, Message, Sampling
from testing.events import collect
from testing.waiting import wait_until


def _image(color=(200, 30, 30)) -> Image.Image:
    return Image.new("RGB", (64, 48), color)


def _request(thinking=False, budget=None, max_new=40, seed=7, temperature=0.0, images=1,
             text="What is in the picture?") -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("user", text, tuple(_image() for _ in range(images))),),
        thinking=thinking, thinking_budget=budget,
        sampling=Sampling(max_new_tokens=max_new, temperature=temperature, seed=seed))


def test_answer_streams_in_several_events_with_stats(tiny_engine):
    texts, kinds, done = collect(tiny_engine.stream(_request(max_new=30)))
    assert done is not None and done.error is None
    assert len(kinds) > 3 and set(kinds) == {"answer"}
    assert texts["answer"].strip()
    stats = done.stats
    assert stats.answer_tokens + stats.reasoning_tokens == 30
    assert stats.finish_reason == "length"
    assert stats.time_to_first_token_s is not None and stats.time_to_first_token_s > 0
    assert stats.tokens_per_s > 0
    assert stats.seed == 7


def test_thinking_on_streams_reasoning_first(tiny_engine):
    texts, kinds, done = collect(tiny_engine.stream(_request(thinking=True, max_new=30)))
    # The template pre-fills the opening tag, so the model starts inside its reasoning.
    assert kinds[0] == "reasoning"
    assert done.stats.reasoning_tokens > 0
    assert "<think>" not in texts["reasoning"]


def test_thinking_off_has_no_reasoning(tiny_engine):
    texts, kinds, done = collect(tiny_engine.stream(_request(thinking=False, max_new=20)))
    assert "reasoning" not in kinds
    assert done.stats.reasoning_tokens == 0


def test_budget_caps_reasoning_and_the_answer_follows(tiny_engine):
    texts, kinds, done = collect(tiny_engine.stream(_request(thinking=True, budget=12,
                                                              max_new=40)))
    stats = done.stats
    assert stats.budget_exhausted
    assert stats.reasoning_tokens <= 12
    assert stats.answer_tokens > 0
    # One continuous stream: all reasoning, then all answer.
    assert kinds.index("answer") > 0
    assert "reasoning" not in kinds[kinds.index("answer"):]
    assert texts["answer"].strip()


def test_zero_budget_answers_directly(tiny_engine):
    texts, kinds, done = collect(tiny_engine.stream(_request(thinking=True, budget=0,
                                                              max_new=15)))
    assert done.stats.reasoning_tokens == 0
    assert done.stats.answer_tokens > 0
    assert set(kinds) == {"answer"}


def test_same_seed_same_answer_and_other_seed_differs(tiny_engine):
    first = collect(tiny_engine.stream(_request(temperature=1.0, seed=123, max_new=25)))
    again = collect(tiny_engine.stream(_request(temperature=1.0, seed=123, max_new=25)))
    other = collect(tiny_engine.stream(_request(temperature=1.0, seed=999, max_new=25)))
    assert first[0] == again[0]
    assert first[0] != other[0]


def test_random_seed_is_reported_and_reproduces(tiny_engine):
    first = collect(tiny_engine.stream(_request(temperature=1.0, seed=None, max_new=20)))
    seed = first[2].stats.seed
    assert isinstance(seed, int)
    again = collect(tiny_engine.stream(_request(temperature=1.0, seed=seed, max_new=20)))
    assert first[0] == again[0]


def test_cancel_stops_the_generation_thread(tiny_engine):
    request = _request(max_new=4000)
    events = tiny_engine.stream(request)
    next(events)
    tiny_engine.cancel(request.request_id)
    texts, kinds, done = collect(events)
    assert done.stats.finish_reason == "cancelled"
    assert done.stats.answer_tokens < 4000
    # The model is free again: the next request runs to completion.
    _, _, after = collect(tiny_engine.stream(_request(max_new=5)))
    assert after.stats.finish_reason == "length"


def test_closing_the_stream_frees_the_engine(tiny_engine):
    request = _request(max_new=4000)
    events = tiny_engine.stream(request)
    next(events)
    events.close()  # what a closed browser tab does to the iterator
    finished = threading.Event()

    def ask_again():
        collect(tiny_engine.stream(_request(max_new=5)))
        finished.set()

    threading.Thread(target=ask_again, daemon=True).start()
    assert finished.wait(timeout=60), "the engine stayed busy after its stream was closed"


@pytest.fixture(scope="module")
def serial_engine():
    """The tiny Qwen3.5 with batching turned off: one request at a time through `generate`."""
    engine = LocalEngine("tiny-random", quantize="none", device="cpu",
                         batch_limits=BatchLimits(max_batch_size=1))
    engine.load()
    return engine


def test_without_batching_requests_run_one_at_a_time_in_arrival_order(serial_engine):
    assert not serial_engine.batching
    first = _request(max_new=4000)
    events = serial_engine.stream(first)
    next(events)  # the first request now holds the model, and keeps it until it is stopped
    second = _request(max_new=5)
    first_place_while_second_ran = []

    def run_second():
        answer = serial_engine.stream(second)
        next(answer)
        first_place_while_second_ran.append(serial_engine.queue_position(first.request_id))
        collect(answer)

    thread = threading.Thread(target=run_second, daemon=True)
    thread.start()
    assert wait_until(lambda: serial_engine.queue_position(second.request_id) is not None)
    # The second waits, first in line, while the first runs; it has not started.
    assert serial_engine.queue_position(second.request_id) == 1
    assert serial_engine.queue_position(first.request_id) == 0
    assert first_place_while_second_ran == []
    serial_engine.cancel(first.request_id)
    _, _, done = collect(events)
    thread.join(timeout=60)
    assert done.stats.finish_reason == "cancelled"
    # The second ran once the first had let go of the model, not beside it.
    assert first_place_while_second_ran == [None]
    assert serial_engine.queue_position(second.request_id) is None


def test_too_many_images_is_refused_with_a_message(tiny_engine):
    limit = tiny_engine.capabilities().max_images
    with pytest.raises(RequestError, match=f"at most {limit} image"):
        tiny_engine.stream(_request(images=limit + 1))


def test_not_loaded_engine_says_it_is_loading():
    engine = LocalEngine("tiny-random")
    with pytest.raises(ModelNotReady, match="still loading"):
        engine.stream(_request())


def test_too_long_conversation_arrives_as_an_error_event(tiny_engine):
    context = tiny_engine.capabilities().context_length
    huge = " ".join(["word"] * (context * 2))
    texts, kinds, done = collect(tiny_engine.stream(_request(text=huge, max_new=5, images=0)))
    assert done.stats.finish_reason == "error"
    assert "too long for the model" in done.error


def test_a_question_beyond_the_batch_budget_is_refused_and_an_answer_kept_within_it():
    engine = LocalEngine("tiny-random", quantize="none", device="cpu",
                         batch_limits=BatchLimits(max_batch_size=1, max_batch_tokens=120))
    engine.load()
    try:
        long = " ".join(["word"] * 200)
        texts, kinds, done = collect(engine.stream(_request(text=long, max_new=5, images=0)))
        assert done.stats.finish_reason == "error"
        assert "too long for this server" in done.error and "at most 120" in done.error
        request = _request(text="hi", max_new=500, images=0, temperature=1.0)
        prompt = engine._build_inputs(request.messages, False)[0]["input_ids"].shape[1]
        texts, kinds, done = collect(engine.stream(request))
        assert done.error is None and done.stats.finish_reason == "length"
        assert done.stats.answer_tokens + done.stats.reasoning_tokens == 120 - prompt
    finally:
        engine.close()


def test_failure_inside_the_worker_arrives_as_an_error_event(tiny_engine):
    # An image that is not an image (which the safe loader never lets through) breaks the
    # processor inside the generation thread: the caller gets a done event with a generic
    # message, nothing hangs, and the engine keeps working.
    request = GenerationRequest(messages=(Message("user", "hi", ("/no/such/image.png",)),),
                                sampling=Sampling(max_new_tokens=5, temperature=0.0))
    texts, kinds, done = collect(tiny_engine.stream(request))
    assert done.stats.finish_reason == "error"
    assert done.error == "The model failed while answering. The error was logged on the server."
    _, _, after = collect(tiny_engine.stream(_request(max_new=5)))
    assert after.error is None


def test_capabilities_describe_the_model(tiny_engine):
    caps = tiny_engine.capabilities()
    assert caps.family == "qwen3_5"
    assert caps.thinking is True
    assert caps.multi_image is True
    assert caps.context_length > 0


def test_llava_streams_without_thinking(llava_engine):
    caps = llava_engine.capabilities()
    assert caps.family == "llava"
    assert caps.thinking is False
    texts, kinds, done = collect(llava_engine.stream(_request(thinking=True, max_new=20)))
    assert done.error is None
    assert done.stats.reasoning_tokens == 0
    assert texts["answer"].strip()


# -- sampling ----------------------------------------------------------------------------


def _sampled(engine, max_new=20, **sampling) -> tuple[str, object]:
    request = GenerationRequest(messages=(Message("user", "What is in the picture?", (_image(),)),),
                                sampling=Sampling(max_new_tokens=max_new, **sampling))
    texts, _, done = collect(engine.stream(request))
    return texts["answer"], done


def test_top_k_one_sampling_is_greedy(tiny_engine):
    greedy, _ = _sampled(tiny_engine, temperature=0.0, seed=1)
    for seed in (1, 2):
        sampled, done = _sampled(tiny_engine, temperature=1.5, top_p=1.0, top_k=1, seed=seed)
        assert sampled == greedy
        assert done.stats.seed == seed


def test_repetition_penalty_changes_a_greedy_answer(llava_engine):
    # The tiny LLaVA repeats itself; a random model with Qwen's 248k vocabulary hardly ever
    # does, so no penalty would change its answer.
    plain, _ = _sampled(llava_engine, max_new=30, temperature=0.0, seed=1)
    penalised, _ = _sampled(llava_engine, max_new=30, temperature=0.0, seed=1,
                            repetition_penalty=1.5)
    assert penalised != plain


def test_max_new_tokens_is_capped_by_the_engine_limit():
    engine = LocalEngine("tiny-random", quantize="none", device="cpu", max_new_tokens_limit=20)
    engine.load()
    _, done = _sampled(engine, max_new=10_000, temperature=0.0, seed=1)
    assert done.stats.total_tokens == 20
    assert done.stats.finish_reason == "length"


# -- failures ----------------------------------------------------------------------------


def test_out_of_memory_gives_its_message_and_the_next_request_works(tiny_engine):
    calls = []

    def exhausted(module, args, output):
        calls.append(1)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    hook = tiny_engine.model.register_forward_hook(exhausted)
    try:
        _, done = _sampled(tiny_engine, temperature=0.0, seed=1)
    finally:
        hook.remove()
    assert calls
    assert done.stats.finish_reason == "error"
    assert done.error == OUT_OF_MEMORY_MESSAGE
    answer, after = _sampled(tiny_engine, temperature=0.0, seed=1)
    assert after.error is None and answer.strip()


def test_a_large_cleaned_photo_is_answered(tiny_engine):
    size = (2000, 1500)
    photo = Image.merge("RGB", [Image.effect_noise(size, sigma) for sigma in (20, 40, 60)])
    cleaned = load_image(photo, ImagePolicy())
    assert cleaned.width * cleaned.height <= ImagePolicy().max_pixels
    request = GenerationRequest(messages=(Message("user", "Describe it.", (cleaned,)),),
                                sampling=Sampling(max_new_tokens=8, temperature=0.0))
    texts, _, done = collect(tiny_engine.stream(request))
    assert done.error is None and texts["answer"].strip()


def test_a_tiny_checkpoint_without_its_real_files_is_a_load_error(monkeypatch, tmp_path):
    from engine.errors import ModelLoadError

    monkeypatch.setenv("VQA_STUDIO_HUB", str(tmp_path / "nowhere"))
    engine = LocalEngine("tiny-random:llava", quantize="none", device="cpu",
                         cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="nowhere"):
        engine.load()
    assert "VQA_STUDIO_HUB" in engine.load_error
