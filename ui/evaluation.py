"""Does the model (or a tuned adapter) prefer what users preferred? Evaluation runs.

`evaluate(engine, store, ...)` measures the loaded model and each of its adapters against
the stored feedback, on the held-out split by default (the export's split by image, so
nothing an adapter was trained on leaks into its score):

- preference accuracy on DPO pairs: the share of pairs whose chosen answer gets the higher
  log-probability (by total, and by mean per token), the mean margin, and for an adapter the
  implicit DPO reward margin against the base model as reference,
  beta * ((a(chosen) - base(chosen)) - (a(rejected) - base(rejected)));
- answer agreement on accepted answers (SFT examples): a greedy answer with thinking off,
  compared with the accepted answers exactly and after VQA-style normalization;
- head-to-head from users' verdicts on side-by-side answers: wins, ties and losses of each
  adapter against the base model (and against each other), and of thinking on against off,
  with a 95% Wilson interval on the win share (ties and "both bad" left out of the share),
  and a Bradley-Terry ranking when more than two contenders met.

The result is a `Report`; `format_report` prints it as tables, `Report.metrics()` is what a
stored run keeps (`Store.add_evaluation_run`). `main()` is `python app.py evaluate`. The data tab
reads stored runs through `run_rows` and `run_points`. Log-probabilities come from
engine.scoring; this module only decides what to score and how to count.
"""

from __future__ import annotations

import math
import re
import string
import sys
import time
import unicodedata
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.errors import ImageError, RequestError
from engine.scoring import Score, score_answers
from engine.types import GenerationRequest, Message, Sampling
from storage.errors import NotFound
from storage.evaluations import Verdict, verdicts
from storage.examples import Example, in_eval_split
from storage.records import EvaluationRun
from storage.store import Store

Split = Literal["eval", "train", "all"]
SPLITS: tuple[Split, ...] = ("eval", "train", "all")
# Contains a space, so it can never be an adapter's name.
BASE = "base model"
THINKING_ON, THINKING_OFF = "thinking on", "thinking off"
DEFAULT_BETA = 0.1
DEFAULT_EVAL_FRACTION = 0.1
# Two-sided 95% normal quantile for the Wilson interval.
Z_95 = 1.959963984540054
# A greedy answer needs a few more tokens than the longest accepted answer to show that it
# differs; generating further cannot turn a mismatch into a match.
EXTRA_TOKENS = 16

Progress = Callable[[str], None]


# -- pure metrics ---------------------------------------------------------------------------

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


# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferenceResult:
    """How often one contender scores the chosen answer above the rejected one."""

    contender: str
    pairs: int
    accuracy: float | None  # by total log-probability
    accuracy_per_token: float | None  # by mean log-probability per token
    mean_margin: float | None  # mean of total(chosen) - total(rejected), in nats
    mean_margin_per_token: float | None
    # Adapters only: the implicit DPO reward margin against the base model.
    reward_accuracy: float | None = None
    mean_reward_margin: float | None = None


@dataclass(frozen=True)
class AgreementResult:
    """How often one contender's greedy answer matches an accepted answer."""

    contender: str
    examples: int
    exact_match: float | None
    vqa_accuracy: float | None
    errors: int = 0


@dataclass(frozen=True)
class HeadToHead:
    """Users' verdicts between two contenders, from `first`'s side."""

    family: str  # "adapter" or "thinking"
    first: str
    second: str
    wins: int
    ties: int
    losses: int
    both_bad: int

    @property
    def decisive(self) -> int:
        return self.wins + self.losses

    @property
    def win_share(self) -> float | None:
        """Wins among decisive verdicts; ties and "both bad" are left out."""
        return self.wins / self.decisive if self.decisive else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.wins, self.decisive)

    def as_dict(self) -> dict[str, Any]:
        low, high = self.interval
        return {**asdict(self), "win_share": self.win_share, "ci_low": low, "ci_high": high}


@dataclass(frozen=True)
class Report:
    model_id: str
    adapters: tuple[str, ...]
    split: Split
    eval_fraction: float
    beta: float
    snapshot: Mapping[str, Any]
    preference: tuple[PreferenceResult, ...] = ()
    agreement: tuple[AgreementResult, ...] = ()
    head_to_head: tuple[HeadToHead, ...] = ()
    # Family -> contenders with their Bradley-Terry strength, strongest first.
    rankings: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    skipped: Mapping[str, int] = field(default_factory=dict)
    duration_s: float = 0.0

    def metrics(self) -> dict[str, Any]:
        """Every number of the report, as JSON values (what a stored run keeps)."""
        return _finite({
            "beta": self.beta,
            "preference": {r.contender: asdict(r) for r in self.preference},
            "agreement": {r.contender: asdict(r) for r in self.agreement},
            "head_to_head": [match.as_dict() for match in self.head_to_head],
            "rankings": {family: [{"contender": name, "strength": value}
                                  for name, value in ranking]
                         for family, ranking in self.rankings.items()},
            "skipped": dict(self.skipped),
        })


def _finite(value: Any) -> Any:
    """`value` with every infinite or NaN float replaced by None, which JSON can hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


# -- what to evaluate on --------------------------------------------------------------------


def held_out(examples: Iterable[Example], split: Split, eval_fraction: float) -> list[Example]:
    """The examples of `split`, using the export's split by image."""
    if split == "all":
        return list(examples)
    wanted = split == "eval"
    return [e for e in examples if in_eval_split(e, eval_fraction) == wanted]


class PromptImages:
    """Stored images as the engine wants them; the most recently used ones stay decoded."""

    def __init__(self, store: Store, keep: int = 16) -> None:
        from engine.images import ImagePolicy

        self.store = store
        self.policy = ImagePolicy()
        self.keep = keep
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def messages(self, example: Example) -> tuple[Message, ...] | None:
        """The example's prompt as engine messages; None when one of its images is gone or
        can no longer be read."""
        from engine.images import load_image

        messages = []
        for turn in example.prompt:
            images = []
            for sha in turn.image_shas:
                if sha not in self._cache:
                    try:
                        path = self.store.image_path(sha)
                    except NotFound:
                        return None
                    if not path.exists():
                        return None
                    try:
                        self._cache[sha] = load_image(path, self.policy)
                    except ImageError:
                        return None
                    # Decoded images take megabytes each: keep only the recent ones.
                    while len(self._cache) > self.keep:
                        self._cache.popitem(last=False)
                self._cache.move_to_end(sha)
                images.append(self._cache[sha])
            messages.append(Message(turn.role, turn.text, tuple(images)))
        return tuple(messages)


def _prompt_key(example: Example) -> tuple:
    return tuple((turn.role, turn.text, turn.image_shas) for turn in example.prompt)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# -- preference accuracy --------------------------------------------------------------------


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
            mean_reward = _mean(rewards)
        results.append(PreferenceResult(
            contender=contender or BASE,
            pairs=len(rows),
            accuracy=_mean([1.0 if m > 0 else 0.0 for m in margins]),
            accuracy_per_token=_mean([1.0 if m > 0 else 0.0 for m in per_token]),
            mean_margin=_mean(margins),
            mean_margin_per_token=_mean(per_token),
            reward_accuracy=reward_accuracy,
            mean_reward_margin=mean_reward,
        ))
    return tuple(results)


# -- answer agreement -----------------------------------------------------------------------


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
            exact_match=_mean([1.0 if exact else 0.0 for exact, _ in outcomes[contender]]),
            vqa_accuracy=_mean([1.0 if vqa else 0.0 for _, vqa in outcomes[contender]]),
            errors=errors[contender],
        )
        for contender in contenders
    )


# -- head-to-head from users' verdicts ------------------------------------------------------


def head_to_head(found: Iterable[Verdict], *, model_id: str | None = None,
                 skipped: Counter | None = None
                 ) -> tuple[tuple[HeadToHead, ...], dict[str, tuple[tuple[str, float], ...]]]:
    """Wins, ties and losses per pair of contenders, and rankings where more than two met.

    Contenders are the adapter (or the base model) and the thinking switch that produced each
    side. A verdict between answers made with the same settings (two samples) counts for
    neither; one whose answers come from another model than `model_id` is skipped.
    """
    tallies: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    games: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for verdict in found:
        first, second = verdict.first, verdict.second
        if model_id is not None and (first.model_id, second.model_id) != (model_id, model_id):
            if skipped is not None:
                skipped["verdict_other_model"] += 1
            continue
        sides = []
        if first.adapter != second.adapter:
            sides.append(("adapter", first.adapter or BASE, second.adapter or BASE))
        if first.thinking != second.thinking:
            sides.append(("thinking", THINKING_ON if first.thinking else THINKING_OFF,
                          THINKING_ON if second.thinking else THINKING_OFF))
        if not sides and skipped is not None:
            skipped["verdict_same_settings"] += 1
        for family, a, b in sides:
            # Orient every pair the same way: the base model and "thinking off" second.
            if _orientation(family, a, b) > 0:
                a, b = b, a
                outcome = {"pick": "losses"}.get(verdict.kind, verdict.kind)
            else:
                outcome = {"pick": "wins"}.get(verdict.kind, verdict.kind)
            tallies[family, a, b][outcome] += 1
            score = {"wins": 1.0, "losses": 0.0}.get(outcome, 0.5)
            games[family].append((a, b, score))
    matches = tuple(
        HeadToHead(family=family, first=a, second=b, wins=count["wins"], ties=count["tie"],
                   losses=count["losses"], both_bad=count["both_bad"])
        for (family, a, b), count in sorted(tallies.items())
    )
    rankings = {}
    for family, played in games.items():
        contenders = {name for a, b, _ in played for name in (a, b)}
        if len(contenders) > 2:
            rankings[family] = tuple(bradley_terry(played))
    return matches, rankings


def _orientation(family: str, a: str, b: str) -> int:
    """Positive when (a, b) should be swapped so the reference side comes second."""
    reference = BASE if family == "adapter" else THINKING_OFF
    if a == reference:
        return 1
    if b == reference:
        return -1
    return 1 if a > b else -1


# -- a whole run ----------------------------------------------------------------------------


def evaluate(engine, store: Store, *, split: Split = "eval",
             eval_fraction: float = DEFAULT_EVAL_FRACTION, beta: float = DEFAULT_BETA,
             max_new_tokens: int = 128, limit: int | None = None, generate: bool = True,
             progress: Progress | None = None) -> Report:
    """Evaluate the loaded model and each of its adapters on the stored feedback."""
    from storage.export import collect

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError("the eval fraction must be between 0 and 1")
    started = time.perf_counter()
    caps = engine.capabilities()
    snapshot = store.data_snapshot()
    all_pairs, _ = collect(store, "dpo")
    all_accepted, _ = collect(store, "sft")
    pairs = held_out(all_pairs, split, eval_fraction)
    accepted = held_out(all_accepted, split, eval_fraction)
    if limit is not None:
        # The most recently decided ones: collect gives oldest first.
        pairs = pairs[-limit:] if limit > 0 else []
        accepted = accepted[-limit:] if limit > 0 else []
    found = list(verdicts(store))
    snapshot.update(dpo_pairs=len(all_pairs), pairs_evaluated=len(pairs),
                    sft_examples=len(all_accepted), sft_evaluated=len(accepted),
                    verdicts=len(found))

    skipped: Counter = Counter()
    images = PromptImages(store)
    if progress:
        progress(f"{len(pairs)} pairs and {len(accepted)} accepted answers in the {split} split")
    preference = preference_accuracy(engine, pairs, images, caps.adapters, beta=beta,
                                     skipped=skipped, progress=progress)
    agreement: tuple[AgreementResult, ...] = ()
    if generate:
        agreement = answer_agreement(engine, accepted, images, caps.adapters,
                                     max_new_tokens=max_new_tokens, skipped=skipped,
                                     progress=progress)
    matches, rankings = head_to_head(found, model_id=caps.model_id, skipped=skipped)
    return Report(
        model_id=caps.model_id, adapters=tuple(caps.adapters), split=split,
        eval_fraction=eval_fraction, beta=beta, snapshot=snapshot, preference=preference,
        agreement=agreement, head_to_head=matches, rankings=rankings, skipped=dict(skipped),
        duration_s=time.perf_counter() - started,
    )


def store_report(store: Store, report: Report, adapter_paths: Mapping[str, str]) -> EvaluationRun:
    """Keep the report as a run, to compare with later ones."""
    return store.add_evaluation_run(model_id=report.model_id,
                                    adapters={name: str(adapter_paths.get(name, ""))
                                              for name in report.adapters},
                                    split=report.split, eval_fraction=report.eval_fraction,
                                    snapshot=report.snapshot, metrics=report.metrics(),
                                    duration_s=report.duration_s)


# -- printing -------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join([str(first).ljust(widths[0]),
                          *(str(c).rjust(w) for c, w in zip(rest, widths[1:], strict=True))])

    return [line(header), *(line(row) for row in rows)]


def format_report(report: Report) -> str:
    """The report as plain-text tables."""
    s = report.snapshot
    lines = [
        f"Evaluation of {report.model_id}"
        + (f" with adapters {', '.join(report.adapters)}" if report.adapters else "")
        + f" on the {report.split} split"
        + (f" (eval fraction {report.eval_fraction:g})" if report.split != "all" else ""),
        f"Data: {s.get('pairs_evaluated', 0)} of {s.get('dpo_pairs', 0)} preference pairs, "
        f"{s.get('sft_evaluated', 0)} of {s.get('sft_examples', 0)} accepted answers, "
        f"{s.get('verdicts', 0)} comparison verdicts; latest feedback "
        f"{s.get('latest_feedback_at') or 'none'}",
        "",
        "Preference accuracy: share of pairs where the chosen answer has the higher "
        f"log-probability (reward: implicit DPO reward vs the base model, beta {report.beta:g})",
    ]
    lines += _table(
        ["contender", "pairs", "acc", "acc/token", "margin", "margin/token", "reward>0",
         "reward margin"],
        [[r.contender, str(r.pairs), _number(r.accuracy), _number(r.accuracy_per_token),
          _number(r.mean_margin, sign=True), _number(r.mean_margin_per_token, 3, sign=True),
          _number(r.reward_accuracy), _number(r.mean_reward_margin, 3, sign=True)]
         for r in report.preference])
    if report.agreement:
        lines += ["", "Answer agreement: greedy answers (thinking off) against accepted answers"]
        lines += _table(
            ["contender", "examples", "exact", "vqa", "errors"],
            [[r.contender, str(r.examples), _number(r.exact_match), _number(r.vqa_accuracy),
              str(r.errors)] for r in report.agreement])
    lines += ["", "Head-to-head from users' verdicts (win share leaves ties and both-bad out; "
              "95% Wilson interval)"]
    if report.head_to_head:
        lines += _table(
            ["first vs second", "wins", "ties", "losses", "both bad", "win share", "95% CI"],
            [[f"{m.first} vs {m.second}", str(m.wins), str(m.ties), str(m.losses),
              str(m.both_bad), _number(m.win_share),
              "-" if not m.decisive else f"{m.interval[0]:.2f}-{m.interval[1]:.2f}"]
             for m in report.head_to_head])
    else:
        lines.append("no comparisons between different adapters or thinking settings yet")
    for family, ranking in report.rankings.items():
        ranked = ", ".join(f"{n}. {name} ({value:.2f})"
                           for n, (name, value) in enumerate(ranking, start=1))
        lines.append(f"Bradley-Terry ranking ({family}): {ranked}")
    if report.skipped:
        lines += ["", "Skipped: " + ", ".join(f"{key} {count}"
                                              for key, count in sorted(report.skipped.items()))]
    if not s.get("pairs_evaluated") and not s.get("sft_evaluated") and report.split != "all":
        lines += ["", f"Nothing is held out in the {report.split} split yet: with few images "
                  "the split is often empty. Try --split all (the numbers then include "
                  "training data) or a larger --eval-fraction."]
    return "\n".join(lines)


# -- stored runs, for the data tab ----------------------------------------------------------


def _by_contender(metrics: Mapping[str, Any], section: str, key: str) -> str:
    """"base model 0.50 · tuned 0.83": one metric for every contender that has it."""
    values = metrics.get(section, {})
    return " · ".join(f"{name} {_number(row[key])}" for name, row in values.items()
                      if row.get(key) is not None)


def run_rows(runs: Sequence[EvaluationRun]) -> list[dict[str, Any]]:
    """One row per stored run, newest first, for a table."""
    rows = []
    for run in runs:
        m = run.metrics
        h2h = " · ".join(
            f"{match['first']} vs {match['second']} {match['wins']}-{match['ties']}-"
            f"{match['losses']}" for match in m.get("head_to_head", []))
        rows.append({
            "date": run.created_at[:16].replace("T", " "),
            "model": run.model_id,
            "adapters": ", ".join(run.adapters) or "-",
            "split": run.split,
            "pairs": run.snapshot.get("pairs_evaluated", 0),
            "preference accuracy": _by_contender(m, "preference", "accuracy") or "-",
            "reward margin > 0": _by_contender(m, "preference", "reward_accuracy") or "-",
            "exact match": _by_contender(m, "agreement", "exact_match") or "-",
            "vqa accuracy": _by_contender(m, "agreement", "vqa_accuracy") or "-",
            "head-to-head (W-T-L)": h2h or "-",
            "run": run.id,
        })
    return rows


def run_points(runs: Sequence[EvaluationRun]) -> list[dict[str, Any]]:
    """(run time, contender, preference accuracy) points, oldest first, for a plot."""
    points = []
    for run in sorted(runs, key=lambda r: (r.created_at, r.id)):
        for name, row in run.metrics.get("preference", {}).items():
            if row.get("accuracy") is not None:
                points.append({"run": run.created_at, "contender": name,
                               "preference accuracy": row["accuracy"]})
    return points


# -- command line ---------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, default_db: str | Path | None = None) -> None:
    """`evaluate [--split eval] [--adapter NAME=PATH ...] [--db PATH] [--model ID] ...`.

    Loads the model in this process, prints the tables and stores the run. The database is
    opened without recovery, so this can run while the app serves (on another device, or on
    one with room for a second copy of the model)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="app.py evaluate",
        description="Measure how well the model and its adapters agree with stored feedback")
    parser.add_argument("--split", choices=SPLITS, default="eval",
                        help="held-out examples (eval, the default), training ones, or all")
    parser.add_argument("--eval-fraction", type=float, default=DEFAULT_EVAL_FRACTION,
                        help="share held out, as given to the export")
    parser.add_argument("--adapter", action="append", default=[],
                        help="NAME=PATH of a LoRA adapter to evaluate (repeatable)")
    parser.add_argument("--db", default=None, help="SQLite file to read")
    parser.add_argument("--model", default="auto", help="hub id, local folder or tiny-random")
    parser.add_argument("--quantize", choices=("auto", "4bit", "8bit", "none"), default="auto")
    parser.add_argument("--beta", type=float, default=DEFAULT_BETA,
                        help="beta of the implicit DPO reward")
    parser.add_argument("--max-new-tokens", type=int, default=128,
                        help="longest greedy answer generated for answer agreement")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate only the most recent N pairs and N accepted answers")
    parser.add_argument("--no-generate", action="store_true",
                        help="skip answer agreement (no generation, scores only)")
    parser.add_argument("--no-save", action="store_true", help="print the run, do not store it")
    args = parser.parse_args(argv)
    db = args.db or default_db
    if db is None:
        parser.error("--db PATH is required")
    if not Path(db).exists():
        parser.error(f"no database at {db}")
    if not 0.0 <= args.eval_fraction <= 1.0:
        parser.error("--eval-fraction must be between 0 and 1")
    adapters = {}
    for item in args.adapter:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--adapter takes NAME=PATH, not {item!r}")
        adapters[name] = path

    from engine.errors import StudioError
    from engine.loading import default_model_id
    from engine.local import LocalEngine

    model = default_model_id() if args.model == "auto" else args.model
    engine = LocalEngine(model, quantize=args.quantize, adapters=adapters)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with Store(db, recover=False) as store:
        try:
            engine.load()
            report = evaluate(engine, store, split=args.split, eval_fraction=args.eval_fraction,
                              beta=args.beta, max_new_tokens=args.max_new_tokens,
                              limit=args.limit, generate=not args.no_generate,
                              progress=progress)
        except StudioError as error:
            parser.exit(1, f"app.py evaluate: {error}\n")
        print(format_report(report))
        if not args.no_save:
            run = store_report(store, report, adapters)
            print(f"\nStored as run {run.id} ({run.created_at}).")
