"""A whole evaluation run, and keeping it.

`evaluate(engine, store, ...)` measures the loaded model and each of its adapters on the
stored feedback of one split (preference accuracy, answer agreement, head-to-head) and
returns a `Report` with a snapshot of the data it saw; `store_report` keeps it as a stored
run to compare with later ones. The engine comes in loaded; this module builds none.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping

from evaluation.agreement import answer_agreement
from evaluation.head_to_head import head_to_head
from evaluation.preference import DEFAULT_BETA, preference_accuracy
from evaluation.prompts import DEFAULT_EVAL_FRACTION, PromptImages, held_out
from evaluation.results import SPLITS, AgreementResult, Progress, Report, Split
from storage.evaluations import verdicts
from storage.records import EvaluationRun
from storage.store import Store


def evaluate(engine, store: Store, *, split: Split = "eval",
             eval_fraction: float = DEFAULT_EVAL_FRACTION, beta: float = DEFAULT_BETA,
             max_new_tokens: int = 128, limit: int | None = None, generate: bool = True,
             progress: Progress | None = None) -> Report:
    """Evaluate the loaded model and each of its adapters on the stored feedback."""
    from exports.formats import collect

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
