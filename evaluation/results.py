"""What an evaluation finds: the values one run produces, and the names of its contenders.

A `Report` holds every result of a run with the data snapshot it was computed on;
`Report.metrics()` is the JSON a stored run keeps. Frozen dataclasses, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from evaluation.metrics import wilson_interval

Split = Literal["eval", "train", "all"]
SPLITS: tuple[Split, ...] = ("eval", "train", "all")
# Contains a space, so it can never be an adapter's name.
BASE = "base model"
THINKING_ON, THINKING_OFF = "thinking on", "thinking off"

# Told what a long run is doing, one line at a time.
Progress = Callable[[str], None]


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
    """Everything one run found, with the data snapshot it was computed on."""

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
