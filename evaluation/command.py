"""The `evaluate` command: its own flags, and one run from an engine to tables and a stored run.

`python app.py evaluate` (or `vqa-studio evaluate`) is parsed by app.py, which adds these
flags to its parser beside the app's own settings: the model, its adapters, the engine and
the database come from the same flags and VQA_STUDIO_* environment variables the served app
reads, so on a deployed Space the command evaluates the served model. app.py builds the
engine and calls `run`, which loads it in this process, prints the tables and stores the
run. The database is opened without recovery, so this can run while the app serves (on
another device, or on one with room for a second copy of the model). Errors the user can act
on (`engine.errors.StudioError`) are raised to the caller, which reports them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from evaluation.preference import DEFAULT_BETA
from evaluation.prompts import DEFAULT_EVAL_FRACTION
from evaluation.report import format_report
from evaluation.results import SPLITS, Split
from evaluation.runs import evaluate, store_report
from storage.records import EvaluationRun
from storage.store import Store

if TYPE_CHECKING:
    from engine.protocol import Engine


@dataclass(frozen=True)
class Options:
    """What to evaluate and how; the model and the database are the app's settings."""

    split: Split = "eval"
    eval_fraction: float = DEFAULT_EVAL_FRACTION
    beta: float = DEFAULT_BETA
    max_new_tokens: int = 128
    limit: int | None = None
    generate: bool = True
    save: bool = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's own flags; none shares a name with a setting of the app."""
    parser.add_argument("--split", choices=SPLITS, default="eval",
                        help="held-out examples (eval, the default), training ones, or all")
    parser.add_argument("--eval-fraction", type=float, default=DEFAULT_EVAL_FRACTION,
                        help="share held out, as given to the export")
    parser.add_argument("--beta", type=float, default=DEFAULT_BETA,
                        help="beta of the implicit DPO reward")
    parser.add_argument("--max-new-tokens", type=int, default=128,
                        help="longest greedy answer generated for answer agreement")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate only the most recent N pairs and N accepted answers")
    parser.add_argument("--no-generate", action="store_true",
                        help="skip answer agreement (no generation, scores only)")
    parser.add_argument("--no-save", action="store_true", help="print the run, do not store it")


def options_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Options:
    """The options `add_arguments` parsed; a bad value stops through `parser.error`."""
    if not 0.0 <= args.eval_fraction <= 1.0:
        parser.error("--eval-fraction must be between 0 and 1")
    return Options(split=args.split, eval_fraction=args.eval_fraction, beta=args.beta,
                   max_new_tokens=args.max_new_tokens, limit=args.limit,
                   generate=not args.no_generate, save=not args.no_save)


def run(engine: Engine, db_path: str | Path, options: Options, adapter_paths: Mapping[str, str], *,
        out: TextIO | None = None) -> EvaluationRun | None:
    """Load `engine`, evaluate it on the database at `db_path`, print the report to `out`
    (progress to stderr) and store the run unless told not to; returns the stored run."""
    out = sys.stdout if out is None else out

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    with Store.existing(db_path, recover=False) as store:
        engine.load()
        report = evaluate(engine, store, split=options.split,
                          eval_fraction=options.eval_fraction, beta=options.beta,
                          max_new_tokens=options.max_new_tokens, limit=options.limit,
                          generate=options.generate, progress=progress)
        print(format_report(report), file=out)
        if not options.save:
            return None
        stored = store_report(store, report, adapter_paths)
        print(f"\nStored as run {stored.id} ({stored.created_at}).", file=out)
        return stored
