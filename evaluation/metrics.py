"""Pure metrics: answer normalization as in VQA, matching, Wilson intervals, Bradley-Terry.

Plain functions of strings and numbers; they know nothing about models, stores or reports.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence

# Two-sided 95% normal quantile for the Wilson interval.
Z_95 = 1.959963984540054

_NUMBERS = {word: str(n) for n, word in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
_ARTICLES = {"a", "an", "the"}
_APOSTROPHES = "'\u2019"
_DECIMAL_POINT = re.compile(r"(?<=\d)[.,](?=\d)")


def normalize_answer(text: str) -> str:
    """Lowercase, no punctuation, no articles, number words as digits, single spaces."""
    text = text.lower()
    # A decimal point or thousands comma between digits is part of the number: keep it out
    # of the punctuation pass ("3.5" stays "3.5", not "3 5").
    text = _DECIMAL_POINT.sub("\x00", text)
    kept = []
    for char in text:
        if char in _APOSTROPHES:
            continue  # "don't" -> "dont", as the word is usually written without it
        if char in string.punctuation or unicodedata.category(char).startswith("P"):
            kept.append(" ")
        else:
            kept.append(char)
    words = "".join(kept).replace("\x00", ".").split()
    return " ".join(_NUMBERS.get(word, word) for word in words if word not in _ARTICLES)


def exact_match(prediction: str, references: Sequence[str]) -> bool:
    """The prediction equals an accepted answer, up to surrounding whitespace."""
    return any(prediction.strip() == reference.strip() for reference in references)


def vqa_match(prediction: str, references: Sequence[str]) -> bool:
    """The prediction equals an accepted answer after `normalize_answer`."""
    normalized = normalize_answer(prediction)
    return any(normalized == normalize_answer(reference) for reference in references)


def wilson_interval(successes: float, trials: float, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a share; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    share = successes / trials
    denominator = 1 + z * z / trials
    center = (share + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def bradley_terry(games: Iterable[tuple[str, str, float]], *, iterations: int = 10_000,
                  tolerance: float = 1e-10) -> list[tuple[str, float]]:
    """Strengths from (a, b, a's score) games, a's score 1 (won), 0.5 (tie) or 0 (lost).

    Minorization-maximization (Hunter, 2004). Every two contenders also share one virtual
    tie, which keeps the strengths finite when someone never won or never lost and ties
    together contenders that never met. Strengths sum to 1; strongest first.
    """
    wins: dict[str, float] = defaultdict(float)
    played: dict[tuple[str, str], float] = defaultdict(float)
    for first, second, score in games:
        if first == second:
            continue
        wins[first] += score
        wins[second] += 1 - score
        played[first, second] += 1
        played[second, first] += 1
    names = sorted(wins)
    for index, first in enumerate(names):
        for second in names[index + 1:]:
            wins[first] += 0.5
            wins[second] += 0.5
            played[first, second] += 1
            played[second, first] += 1
    strength = {name: 1 / len(names) for name in names}
    for _ in range(iterations):
        updated = {}
        for name in names:
            denominator = sum(played[name, other] / (strength[name] + strength[other])
                              for other in names if other != name)
            updated[name] = wins[name] / denominator if denominator else strength[name]
        total = sum(updated.values())
        updated = {name: value / total for name, value in updated.items()}
        change = max(abs(updated[name] - strength[name]) for name in names)
        strength = updated
        if change < tolerance:
            break
    return sorted(strength.items(), key=lambda item: (-item[1], item[0]))


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean, or None when there are no values (a metric with nothing to measure)."""
    return sum(values) / len(values) if values else None
