"""How likely the loaded model finds a given answer: log-probabilities from its logits.

`score_answer(engine, messages, answer, adapter)` returns the `Score` of `answer` as the reply
to the conversation `messages` (which ends with the user's question, images included), for
the base model (`adapter` None) or a loaded LoRA adapter: the sum over the answer's tokens of
log p(token | prompt, earlier answer tokens), the number of tokens, and their mean. The prompt
is the one the engine generates from (chat template, generation prompt, thinking off); the
answer is followed by the token the model really ends answers with (its generation
config's first end-of-sequence id: `<|im_end|>` for Qwen, a newline for BLIP-2), so a
complete answer competes with its own prefixes and extensions on equal terms. Control tokens
typed inside an answer count as plain text. `score_answers` scores several answers to one
conversation under one hold of the model.

Scoring is a member of the engine contract (`Engine.score_answers`): the functions here are
the callers' shorthand for it, and `answer_ids` / `score_tokens` are the arithmetic the
in-process `LocalEngine` does under its model lock, so scoring queues with generation requests
and never runs alongside one. Only an engine with the model in this process has logits to read;
the others refuse with a `RequestError`, as does a conversation the engine would refuse to
answer (no question last, too many images, an adapter that is not loaded). Nothing here knows
about the UI or the database.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.types import Message, Score

if TYPE_CHECKING:
    from engine.protocol import Engine

__all__ = ["Score", "answer_ids", "score_answer", "score_answers", "score_tokens"]

# Scoring needs the model's logits; engines without them refuse with this.
NO_LOGITS_MESSAGE = ("Scoring answers needs the model in this process (the local engine); a "
                     "remote server does not expose its log-probabilities.")


def score_answer(engine: Engine, messages: tuple[Message, ...], answer: str,
                 adapter: str | None = None) -> Score:
    """The log-probability of `answer` as the model's reply to `messages`."""
    return engine.score_answers(messages, [answer], adapter)[0]


def score_answers(engine: Engine, messages: tuple[Message, ...], answers: Sequence[str],
                  adapter: str | None = None) -> list[Score]:
    """Scores of each of `answers` as the reply to `messages`, in order."""
    return engine.score_answers(messages, answers, adapter)


def answer_ids(tokenizer, answer: str, *, end_id: int, question_answer: bool) -> list[int]:
    """The tokens of `answer` as the model would write it, ending with `end_id`."""
    text = answer
    if question_answer:
        # The prompt ends with "Answer:" and generated answers start after a space.
        text = " " + answer.lstrip()
    ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return list(ids) + [end_id]


def score_tokens(model, inputs, answer_ids: list[int]) -> Score:
    """The score of `answer_ids` following the prompt `inputs`, in one forward pass."""
    import torch

    from engine.prompt_inputs import extend_inputs

    answer_tensor = torch.tensor([answer_ids], dtype=inputs["input_ids"].dtype,
                                 device=inputs["input_ids"].device)
    full = extend_inputs(inputs, torch.cat([inputs["input_ids"], answer_tensor], dim=1))
    count = len(answer_ids)
    kwargs = {}
    # The logits of the prompt's own tokens are not needed: with a large vocabulary and a
    # long image prompt, computing them would cost more memory than the rest of the pass.
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = count + 1
    with torch.inference_mode():
        logits = model(**full, use_cache=False, **kwargs).logits
    # The logits at position t predict token t + 1: the last prompt position predicts the
    # first answer token, and the last position (after the end-of-turn token) predicts nothing.
    predicting = logits[0, -(count + 1):-1].float()
    logprobs = torch.log_softmax(predicting, dim=-1)
    chosen = logprobs.gather(1, answer_tensor[0].unsqueeze(1).to(logprobs.device)).squeeze(1)
    return Score(total_logprob=float(chosen.sum()), tokens=count)
