"""Answer agreement: does a contender's greedy answer match an accepted answer?

Each accepted answer's question (SFT examples, grouped by prompt so a question counts once)
is answered greedily with thinking off by the base model and each adapter, and the answer is
compared with every accepted answer to it, exactly and after VQA-style normalization.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from engine.errors import RequestError
from engine.types import GenerationRequest, Message, Sampling
from evaluation.metrics import exact_match, mean_or_none, vqa_match
from evaluation.prompts import PromptImages
from evaluation.results import BASE, AgreementResult, Progress
from exports.examples import Example

# A greedy answer needs a few more tokens than the longest accepted answer to show that it
# differs; generating further cannot turn a mismatch into a match.
EXTRA_TOKENS = 16


def greedy_answer(engine, messages: tuple[Message, ...], adapter: str | None,
                  max_new_tokens: int) -> tuple[str, str | None]:
    """The answer greedy decoding gives with thinking off, and the error if it failed."""
    request = GenerationRequest(messages=messages, thinking=False, adapter=adapter,
                                sampling=Sampling(max_new_tokens=max_new_tokens,
                                                  temperature=0.0, seed=0))
    answer, error = [], None
    for event in engine.stream(request):
        if event.kind == "answer":
            answer.append(event.text)
        elif event.kind == "done":
            error = event.error
    return "".join(answer), error


def _token_budget(engine, references: Sequence[str], cap: int) -> int:
    tokenizer = getattr(getattr(engine, "processor", None), "tokenizer", None)
    if tokenizer is None:
        return cap
    longest = max(len(tokenizer(text, add_special_tokens=False)["input_ids"])
                  for text in references)
    return max(1, min(cap, longest + EXTRA_TOKENS))


def _prompt_key(example: Example) -> tuple:
    return tuple((turn.role, turn.text, turn.image_shas) for turn in example.prompt)


def answer_agreement(engine, examples: Sequence[Example], images: PromptImages,
                     adapters: Sequence[str], *, max_new_tokens: int = 128,
                     skipped: Counter | None = None,
                     progress: Progress | None = None) -> tuple[AgreementResult, ...]:
    """Greedy answers to each accepted example's prompt, against every accepted answer to it."""
    groups: dict[tuple, list[Example]] = {}
    for example in examples:
        groups.setdefault(_prompt_key(example), []).append(example)
    contenders: list[str | None] = [None, *adapters]
    outcomes: dict[str | None, list[tuple[bool, bool]]] = {c: [] for c in contenders}
    errors: Counter = Counter()
    for number, group in enumerate(groups.values(), start=1):
        messages = images.messages(group[0])
        if messages is None:
            if skipped is not None:
                skipped["example_missing_image"] += 1
            continue
        references = [example.completion for example in group]
        budget = _token_budget(engine, references, max_new_tokens)
        for contender in contenders:
            try:
                answer, error = greedy_answer(engine, messages, contender, budget)
            except RequestError as refused:
                answer, error = "", str(refused)
            if error is not None:
                errors[contender] += 1
                continue
            outcomes[contender].append((exact_match(answer, references),
                                        vqa_match(answer, references)))
        if progress and (number % 10 == 0 or number == len(groups)):
            progress(f"answered {number}/{len(groups)} questions")
    return tuple(
        AgreementResult(
            contender=contender or BASE,
            examples=len(outcomes[contender]),
            exact_match=mean_or_none([1.0 if exact else 0.0 for exact, _ in outcomes[contender]]),
            vqa_accuracy=mean_or_none([1.0 if vqa else 0.0 for _, vqa in outcomes[contender]]),
            errors=errors[contender],
        )
        for contender in contenders
    )
