"""Preference accuracy: does a contender give the chosen answer of a pair the higher
log-probability?

For every DPO pair, the chosen and the rejected answer are scored under the base model and
each adapter (engine.scoring): the share of pairs whose chosen answer scores higher (by
total, and by mean per token), the mean margin, and for an adapter the implicit DPO reward
margin against the base model as reference,
beta * ((a(chosen) - base(chosen)) - (a(rejected) - base(rejected))).
A pair the model cannot take is skipped for every contender, so all score the same pairs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from engine.errors import RequestError
from engine.scoring import Score, score_answers
from evaluation.metrics import mean_or_none
from evaluation.prompts import PromptImages
from evaluation.results import BASE, PreferenceResult, Progress
from exports.examples import Example

DEFAULT_BETA = 0.1


def preference_accuracy(engine, pairs: Sequence[Example], images: PromptImages,
                        adapters: Sequence[str], *, beta: float = DEFAULT_BETA,
                        skipped: Counter | None = None,
                        progress: Progress | None = None) -> tuple[PreferenceResult, ...]:
    """Score every pair's chosen and rejected answer under the base model and each adapter."""
    contenders: list[str | None] = [None, *adapters]
    scores: dict[str | None, list[tuple[Score, Score]]] = {c: [] for c in contenders}
    for number, pair in enumerate(pairs, start=1):
        messages = images.messages(pair)
        if messages is None:
            if skipped is not None:
                skipped["pair_missing_image"] += 1
            continue
        try:
            scored = {contender: score_answers(engine, messages, [pair.completion,
                                                                 pair.rejected or ""], contender)
                      for contender in contenders}
        except RequestError:
            # The model cannot take this prompt (too many images, no image for a model that
            # needs one): every contender skips it, so all are scored on the same pairs.
            if skipped is not None:
                skipped["pair_refused"] += 1
            continue
        for contender, (chosen, rejected) in scored.items():
            scores[contender].append((chosen, rejected))
        if progress and (number % 10 == 0 or number == len(pairs)):
            progress(f"scored {number}/{len(pairs)} pairs")

    base = scores[None]
    results = []
    for contender in contenders:
        rows = scores[contender]
        margins = [c.total_logprob - r.total_logprob for c, r in rows]
        per_token = [c.mean_logprob - r.mean_logprob for c, r in rows]
        reward_accuracy = mean_reward = None
        if contender is not None and rows:
            rewards = [beta * ((c.total_logprob - bc.total_logprob)
                               - (r.total_logprob - br.total_logprob))
                       for (c, r), (bc, br) in zip(rows, base, strict=True)]
            reward_accuracy = sum(1 for value in rewards if value > 0) / len(rewards)
            mean_reward = mean_or_none(rewards)
        results.append(PreferenceResult(
            contender=contender or BASE,
            pairs=len(rows),
            accuracy=mean_or_none([1.0 if m > 0 else 0.0 for m in margins]),
            accuracy_per_token=mean_or_none([1.0 if m > 0 else 0.0 for m in per_token]),
            mean_margin=mean_or_none(margins),
            mean_margin_per_token=mean_or_none(per_token),
            reward_accuracy=reward_accuracy,
            mean_reward_margin=mean_reward,
        ))
    return tuple(results)
