"""Head-to-head from users' verdicts on side-by-side answers.

Wins, ties and losses of each adapter against the base model (and against each other), and
of thinking on against off, each pair oriented with the reference (the base model, thinking
off) second; a Bradley-Terry ranking where more than two contenders met. Pure counting over
`storage.evaluations.Verdict`s: no model is run.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from evaluation.metrics import bradley_terry
from evaluation.results import BASE, THINKING_OFF, THINKING_ON, HeadToHead
from storage.evaluations import Verdict


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
