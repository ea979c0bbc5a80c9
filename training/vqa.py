"""Standard VQA accuracy on a VQA dataset: `python app.py evaluate --vqa SOURCE`.

A source is `easy-vqa` (its test split; `easy-vqa:train` for the other) or a JSON file: a
list of {"image": path (relative to the file), "question": ..., "answers": [...]} (or
"answer": "..."). Every question is asked through the engine as a user would ask it, greedy,
thinking off, of the base model and of each adapter; `--answer` keeps only the questions whose
answers include that one (a blind spot, say). A prediction scores the standard VQA accuracy
after `normalize_answer`: with ten human answers, the mean over the ten leave-one-out subsets
of min(1, matches / 3); with fewer than three answers, 1 when it matches any of them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from engine.errors import StudioError
from engine.protocol import Engine
from engine.types import GenerationRequest, Message, Sampling
from evaluation.metrics import normalize_answer

BASE = "base model"


@dataclass(frozen=True)
class VqaItem:
    image: Path
    question: str
    answers: tuple[str, ...]


def load_vqa(source: str) -> list[VqaItem]:
    """The questions of `source` (see the module docstring)."""
    if source in ("easy-vqa", "easy-vqa:test", "easy-vqa:train"):
        from training.tiny_vqa import easy_vqa_split

        split = source.partition(":")[2] or "test"
        return [VqaItem(Path(row.image), row.question, (row.answer,))
                for row in easy_vqa_split(split)]
    path = Path(source)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [VqaItem(path.parent / row["image"], row["question"],
                        tuple(row["answers"]) if "answers" in row else (row["answer"],))
                for row in rows]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StudioError(
            f"Cannot read {source} as a VQA dataset ({type(error).__name__}: {error}): give "
            "easy-vqa, or a JSON list of {\"image\", \"question\", \"answers\"}.") from error


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """Standard VQA accuracy of one prediction; see the module docstring."""
    guess = normalize_answer(prediction)
    matches = [normalize_answer(answer) == guess for answer in answers]
    if len(answers) < 3:
        return 1.0 if any(matches) else 0.0
    subsets = list(combinations(range(len(answers)), len(answers) - 1))
    return sum(min(1.0, sum(matches[i] for i in subset) / 3) for subset in subsets) / len(subsets)


def evaluate_vqa(engine: Engine, items: Sequence[VqaItem], adapters: Sequence[str] = (), *,
                 max_new_tokens: int = 16,
                 progress: Callable[[str], None] | None = None) -> dict[str, float]:
    """Mean VQA accuracy of the base model and each adapter over `items`."""
    from engine.images import ImagePolicy, load_image

    policy = ImagePolicy()
    contenders: list[str | None] = [None, *adapters]
    totals = dict.fromkeys(contenders, 0.0)
    for number, item in enumerate(items, start=1):
        image = load_image(item.image, policy)
        messages = (Message("user", item.question, (image,)),)
        for contender in contenders:
            request = GenerationRequest(
                messages=messages, adapter=contender,
                sampling=Sampling(max_new_tokens=max_new_tokens, temperature=0.0, seed=0))
            answer = "".join(event.text for event in engine.stream(request)
                             if event.kind == "answer")
            totals[contender] += vqa_score(answer, item.answers)
        if progress and (number % 100 == 0 or number == len(items)):
            progress(f"answered {number}/{len(items)} questions")
    count = max(len(items), 1)
    return {(name or BASE): total / count for name, total in totals.items()}


def main(argv: list[str]) -> None:
    """`evaluate --vqa SOURCE [--model ID] [--adapter NAME=PATH ...] [--answer A] [--limit N]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="app.py evaluate --vqa",
                                     description="Standard VQA accuracy on a VQA dataset")
    parser.add_argument("--vqa", required=True, help="easy-vqa[:train|:test] or a JSON file")
    parser.add_argument("--model", default="auto", help="hub id, local folder or tiny-vqa")
    parser.add_argument("--quantize", choices=("auto", "4bit", "8bit", "none"), default="auto")
    parser.add_argument("--adapter", action="append", default=[],
                        help="NAME=PATH of a LoRA adapter to score too (repeatable)")
    parser.add_argument("--answer", default=None,
                        help="only questions whose answers include this one")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    args = parser.parse_args(argv)
    adapters = {}
    for entry in args.adapter:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            parser.error(f"--adapter takes NAME=PATH, not {entry!r}")
        adapters[name] = path

    from engine.loading import default_model_id
    from engine.local import LocalEngine

    try:
        items = load_vqa(args.vqa)
        if args.answer is not None:
            items = [item for item in items if args.answer in item.answers]
        items = items[:args.limit] if args.limit else items
        if not items:
            raise StudioError(f"No questions in {args.vqa} match.")
        model = default_model_id() if args.model == "auto" else args.model
        engine = LocalEngine(model, quantize=args.quantize, adapters=adapters)
        try:
            engine.load()
            scores = evaluate_vqa(engine, items, tuple(adapters),
                                  progress=lambda m: print(m, file=sys.stderr, flush=True))
        finally:
            engine.close()
    except StudioError as error:
        parser.exit(1, f"app.py evaluate: {error}\n")
    print(f"VQA accuracy on {len(items)} questions of {args.vqa}"
          + (f" answered {args.answer!r}" if args.answer else "") + ":")
    for name, score in scores.items():
        print(f"  {name:24} {100 * score:.1f}%")
