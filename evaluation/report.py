"""A `Report` as plain-text tables, for the command line.

`format_report` prints preference accuracy, answer agreement, head-to-head and rankings, and
says what to try when the split held nothing out; `format_number` is how every figure is
shown ("-" for none).
"""

from __future__ import annotations

from collections.abc import Sequence

from evaluation.results import Report


def format_number(value: float | None, digits: int = 2, sign: bool = False) -> str:
    """`value` with `digits` decimals (and its sign, if asked); "-" when there is none."""
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
        [[r.contender, str(r.pairs), format_number(r.accuracy),
          format_number(r.accuracy_per_token), format_number(r.mean_margin, sign=True),
          format_number(r.mean_margin_per_token, 3, sign=True),
          format_number(r.reward_accuracy), format_number(r.mean_reward_margin, 3, sign=True)]
         for r in report.preference])
    if report.agreement:
        lines += ["", "Answer agreement: greedy answers (thinking off) against accepted answers"]
        lines += _table(
            ["contender", "examples", "exact", "vqa", "errors"],
            [[r.contender, str(r.examples), format_number(r.exact_match),
              format_number(r.vqa_accuracy), str(r.errors)] for r in report.agreement])
    lines += ["", "Head-to-head from users' verdicts (win share leaves ties and both-bad out; "
              "95% Wilson interval)"]
    if report.head_to_head:
        lines += _table(
            ["first vs second", "wins", "ties", "losses", "both bad", "win share", "95% CI"],
            [[f"{m.first} vs {m.second}", str(m.wins), str(m.ties), str(m.losses),
              str(m.both_bad), format_number(m.win_share),
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
