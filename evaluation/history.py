"""Stored evaluation runs as rows for a table and points for a plot (the data tab's view).

Reads only `EvaluationRun`s the store returns; every figure is shown as `format_number` does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evaluation.report import format_number
from storage.records import EvaluationRun


def _by_contender(metrics: Mapping[str, Any], section: str, key: str) -> str:
    """"base model 0.50 · tuned 0.83": one metric for every contender that has it."""
    values = metrics.get(section, {})
    return " · ".join(f"{name} {format_number(row[key])}" for name, row in values.items()
                      if row.get(key) is not None)


# The table's columns, named even when there is no run yet (an empty table still says what
# it will hold).
RUN_COLUMNS = ("date", "model", "adapters", "split", "pairs", "preference accuracy",
               "reward margin > 0", "exact match", "vqa accuracy", "head-to-head (W-T-L)", "run")


def run_rows(runs: Sequence[EvaluationRun]) -> list[dict[str, Any]]:
    """One row per stored run, newest first, for a table; keys are RUN_COLUMNS."""
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
