"""Scoring answers with the local engine: real log-probabilities from the tiny Qwen3.5
checkpoint, checked by hand against the model's logits, and a LoRA adapter trained here that
prefers the answer it was trained on."""

from __future__ import annotations

import hashlib
import threading

import pytest
import torch
from PIL import Image

from engine.errors import RequestError
from engine.local import LocalEngine
from engine.remote import RemoteEngine
from engine.scoring import Score, score_answer, score_answers
from engine.tiny import ensure_tiny
from engine.types import GenerationRequest, Message, Sampling
from testing.lora import prompt_inputs, train_lora

QUESTION = "What is in the picture?"
TARGET = "a white horse is next to the river"
# As many tokens as TARGET (Qwen3.5 tokenizer), so length alone does not decide between them.
ALTERNATIVE = "a red car is parked near the tree"


def _image() -> Image.Image:
    return Image.new("RGB", (64, 48), (200, 30, 30))


def _messages(image: Image.Image | None = None) -> tuple[Message, ...]:
    return (Message("user", QUESTION, (image or _image(),)),)


def shared_adapter(tmp_path_factory):
    """The adapter trained toward TARGET, once per test session
    (tests/evaluation/test_evaluation.py names the same folder for the same question and
    target, so it is trained once for both)."""
    tag = hashlib.sha256(f"{QUESTION}|{TARGET}".encode()).hexdigest()[:10]
    out = tmp_path_factory.getbasetemp() / f"adapter-{tag}"
    if not (out / "adapter_config.json").exists():
        train_lora(ensure_tiny("qwen3_5"), out, question=QUESTION, target=TARGET,
                   image=_image(), steps=25)
    return out


@pytest.fixture(scope="module")
def tuned_engine(tmp_path_factory):
    adapter = shared_adapter(tmp_path_factory)
    engine = LocalEngine("tiny-random", quantize="none", device="cpu",
                         adapters={"tuned": adapter})
    engine.load()
    return engine


def _greedy(engine: LocalEngine, messages, max_new_tokens: int = 12) -> str:
    request = GenerationRequest(messages=messages, thinking=False,
                                sampling=Sampling(max_new_tokens=max_new_tokens, temperature=0.0))
    events = list(engine.stream(request))
    assert events[-1].error is None
    return "".join(event.text for event in events if event.kind == "answer")


def test_score_is_the_sum_of_log_softmax_over_the_answer_tokens(tiny_engine):
    image = _image()
    answer = "a red square"
    processor, model = tiny_engine.processor, tiny_engine.model
    tokenizer = processor.tokenizer

    # By hand: the engine's prompt (thinking off), the answer and the end-of-turn token.
    inputs = prompt_inputs(processor, QUESTION, image, thinking=False)
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    answer_ids.append(tokenizer.eos_token_id)
    prompt_length = inputs["input_ids"].shape[1]
    added = torch.tensor([answer_ids])
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], added], dim=1)
    full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(added)], dim=1)
    full["mm_token_type_ids"] = torch.cat(
        [inputs["mm_token_type_ids"], torch.zeros_like(added)], dim=1)
    with torch.no_grad():
        logits = model(**full).logits
    logprobs = torch.log_softmax(logits[0].float(), dim=-1)
    expected = sum(float(logprobs[prompt_length - 1 + i, token])
                   for i, token in enumerate(answer_ids))

    score = score_answer(tiny_engine, (Message("user", QUESTION, (image,)),), answer)
    assert score.tokens == len(answer_ids)
    assert score.total_logprob == pytest.approx(expected, abs=1e-4)
    assert score.mean_logprob == pytest.approx(expected / len(answer_ids), abs=1e-5)
    assert score.total_logprob < 0


def test_several_answers_score_as_each_one_alone(tiny_engine):
    answers = ["a red square", "nothing", "the sky at noon over the sea"]
    together = score_answers(tiny_engine, _messages(), answers)
    alone = [score_answer(tiny_engine, _messages(), answer) for answer in answers]
    assert [s.tokens for s in together] == [s.tokens for s in alone]
    for joint, single in zip(together, alone, strict=True):
        assert joint.total_logprob == pytest.approx(single.total_logprob, abs=1e-5)
    # A longer answer has more tokens to pay for.
    assert together[2].tokens > together[1].tokens


def test_the_models_own_greedy_answer_beats_the_same_tokens_in_reverse(tiny_engine):
    tokenizer = tiny_engine.processor.tokenizer
    greedy = _greedy(tiny_engine, _messages())
    ids = tokenizer(greedy, add_special_tokens=False)["input_ids"]
    assert len(ids) > 3
    reversed_answer = tokenizer.decode(list(reversed(ids)))
    assert reversed_answer != greedy
    chosen, rejected = score_answers(tiny_engine, _messages(), [greedy, reversed_answer])
    assert chosen.total_logprob > rejected.total_logprob
    assert chosen.mean_logprob > rejected.mean_logprob


def test_control_tokens_inside_an_answer_are_scored_as_plain_text(tiny_engine):
    plain = score_answer(tiny_engine, _messages(), "yes")
    smuggled = score_answer(tiny_engine, _messages(), "yes<|im_end|>")
    # "<|im_end|>" spelled out takes several ordinary tokens, not the one control token.
    assert smuggled.tokens > plain.tokens + 1


def test_an_adapter_trained_toward_a_target_prefers_it(tuned_engine):
    base_before = score_answers(tuned_engine, _messages(), [TARGET, ALTERNATIVE], None)
    tuned = score_answers(tuned_engine, _messages(), [TARGET, ALTERNATIVE], "tuned")
    base_after = score_answers(tuned_engine, _messages(), [TARGET, ALTERNATIVE], None)

    target, alternative = tuned
    assert target.total_logprob > alternative.total_logprob
    # The adapter made the target far more likely than the base model found it...
    assert target.total_logprob > base_before[0].total_logprob + 5
    # ...so its implicit DPO reward for "target over alternative" is positive.
    reward = ((target.total_logprob - base_before[0].total_logprob)
              - (alternative.total_logprob - base_before[1].total_logprob))
    assert reward > 0
    # Scoring with the adapter leaves the base model as it was.
    for before, after in zip(base_before, base_after, strict=True):
        assert after.total_logprob == pytest.approx(before.total_logprob, abs=1e-5)


def test_scoring_waits_while_the_model_is_busy(tiny_engine):
    results: list[Score] = []
    with tiny_engine.holding_model(_messages()):
        worker = threading.Thread(
            target=lambda: results.append(score_answer(tiny_engine, _messages(), "a cat")))
        worker.start()
        worker.join(0.5)
        # It cannot have finished: the model is held by someone else.
        assert worker.is_alive() and not results
    worker.join(60)
    assert not worker.is_alive()
    assert results and results[0].tokens > 1


def test_requests_that_cannot_be_scored_are_refused(tiny_engine):
    with pytest.raises(RequestError, match="No adapter named 'missing'"):
        score_answer(tiny_engine, _messages(), "a cat", adapter="missing")
    with pytest.raises(RequestError, match="no question"):
        score_answer(tiny_engine, (Message("assistant", "hello"),), "a cat")
    remote = RemoteEngine("http://127.0.0.1:9/v1", "some-model")
    with pytest.raises(RequestError, match="local engine"):
        score_answer(remote, _messages(), "a cat")
