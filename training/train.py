"""From the store to a LoRA adapter: `train(store, options)`, which is `python app.py train`.

The training set is what `exports.formats` writes for TRL (`trl-sft`, `trl-dpo`, `trl-kto`):
the same consented examples, the same filters, the same split by image. Only the train split
is trained on; the eval split stays held out for `python app.py evaluate`. The base model is
loaded by `engine.loading.load_model`, exactly as the app loads it (a 4-bit base on a GPU is
QLoRA). TRL's trainers wrap it with a PEFT LoRA and train; nothing here writes a training
loop. "sft-then-dpo" (the default) first fits the accepted answers with SFT, then continues
the same adapter with DPO against a frozen copy of the SFT adapter as reference: DPO alone on
a weak base tends to teach it to avoid answers rather than to give good ones.

The adapter is written into a hidden temporary sibling of `out_dir` and renamed into place
only when training succeeded, so a folder at `out_dir` is always a whole adapter: PEFT's
adapter_config.json and adapter_model.safetensors, plus a card (README.md for people,
training.json for programs) with the data snapshot, method, parameters and losses. Problems a
user can fix (an unknown method, too few examples, a missing base model, running out of
memory) raise `TrainingError` with a message that says what to do; nothing is left behind.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import ModelLoadError, StudioError
from storage.errors import InvalidRequest
from storage.store import Store

log = logging.getLogger(__name__)

METHODS: dict[str, tuple[str, ...]] = {
    "sft-then-dpo": ("sft", "dpo"),
    "sft": ("sft",),
    "dpo": ("dpo",),
    "kto": ("kto",),
}
DEFAULT_METHOD = "sft-then-dpo"
# LoRA learns faster than full fine-tuning wants: these are the usual LoRA rates per stage.
DEFAULT_LEARNING_RATES = {"sft": 2e-4, "dpo": 5e-5, "kto": 5e-5}
# Below this many training examples a stage would only memorise noise.
DEFAULT_MIN_EXAMPLES = 4
TARGET_CHOICES = ("language", "all-linear")
CARD_FILE = "training.json"

Progress = Callable[[str], None]


class TrainingError(StudioError):
    """Training cannot start or finish; the message says what to change."""


@dataclass(frozen=True)
class TrainOptions:
    out_dir: Path
    method: str = DEFAULT_METHOD
    base_model: str = "auto"
    # "none" trains on full-precision weights; "4bit" is QLoRA, on a CUDA GPU only.
    quantize: str = "none"
    since: str | None = None
    consent_versions: tuple[str, ...] | None = None
    eval_fraction: float = 0.1
    epochs: float = 1.0  # per stage
    rank: int = 8
    alpha: int | None = None  # None: twice the rank
    dropout: float = 0.05
    # "language": every linear layer of the language model; "all-linear": PEFT's choice (the
    # vision tower too); or comma-separated layer names such as "q_proj,v_proj".
    targets: str = "language"
    learning_rate: float | None = None  # None: DEFAULT_LEARNING_RATES per stage
    beta: float = 0.1  # DPO and KTO
    batch_size: int = 4
    gradient_accumulation: int = 1
    min_examples: int = DEFAULT_MIN_EXAMPLES
    seed: int = 0
    device: str | None = None  # None: CUDA when there is one


@dataclass(frozen=True)
class StageResult:
    kind: str
    examples: int  # training examples
    held_out: int  # examples of the eval split, not trained on
    steps: int
    learning_rate: float
    train_loss: float
    losses: tuple[tuple[int, float], ...]  # (step, loss) as logged
    data: Mapping[str, Any] = field(default_factory=dict)  # the export's manifest


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    method: str
    base_model: str
    stages: tuple[StageResult, ...]
    duration_s: float


def check_options(options: TrainOptions) -> None:
    """Refuse what cannot work before anything is loaded or written."""
    if options.method not in METHODS:
        raise TrainingError(
            f"Unknown training method {options.method!r}; use one of {', '.join(METHODS)} "
            f"({DEFAULT_METHOD} is the recommended recipe)."
        )
    out = Path(options.out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainingError(f"{out} already exists and is not empty; name a new adapter folder.")
    if options.rank < 1:
        raise TrainingError("The LoRA rank must be at least 1.")
    if not options.epochs > 0:
        raise TrainingError("The number of epochs must be above 0.")
    if options.min_examples < 1:
        raise TrainingError("The minimum number of examples must be at least 1.")
    if options.batch_size < 1 or options.gradient_accumulation < 1:
        raise TrainingError("The batch size and gradient accumulation must be at least 1.")
    if "kto" in METHODS[options.method] and options.batch_size < 2:
        # KTO estimates its KL term from the other examples of the batch.
        raise TrainingError("KTO needs a batch size of at least 2.")
    if not 0.0 <= options.eval_fraction < 1.0:
        raise TrainingError("The eval fraction must be at least 0 and below 1.")
    if options.quantize not in ("none", "4bit"):
        raise TrainingError("Train on a full-precision base (none) or QLoRA (4bit).")


def train(store: Store, options: TrainOptions, progress: Progress | None = None) -> TrainResult:
    """Train the adapter `options` describe on the store's feedback; see the module docstring."""
    progress = progress or (lambda message: None)
    check_options(options)
    started = time.perf_counter()
    out = Path(options.out_dir)
    kinds = METHODS[options.method]
    with tempfile.TemporaryDirectory(prefix="vqa-studio-train-") as scratch:
        # The data first: a refusal for too little of it leaves nothing behind.
        data = {kind: _training_data(store, kind, options, Path(scratch), progress)
                for kind in kinds}
        staging = _staging_folder(out)
        try:
            model, processor, base = _load_base(options, progress)
            stages = []
            for kind in kinds:
                model, stage = _run_stage(kind, model, processor, data[kind], options,
                                          Path(scratch), progress)
                stages.append(stage)
            _save_adapter(model, staging)
            result = TrainResult(out_dir=out, method=options.method,
                                 base_model=options.base_model, stages=tuple(stages),
                                 duration_s=time.perf_counter() - started)
            _write_card(staging, result, options, base, store)
            if out.exists():
                out.rmdir()  # checked empty above
            staging.rename(out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    progress(f"wrote the adapter to {out} in {result.duration_s:.0f} s")
    return result


def _staging_folder(out: Path) -> Path:
    """An empty folder beside `out` to write the adapter into, renamed to `out` when it is
    complete; made with the permissions any new folder gets (mkdtemp's are owner-only)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-training-", dir=out.parent))
    except OSError as error:
        raise TrainingError(f"Cannot write the adapter to {out}: {error.strerror}.") from error
    probe = out.parent / f"{staging.name}-mode"
    probe.mkdir()
    staging.chmod(probe.stat().st_mode & 0o7777)
    probe.rmdir()
    return staging


# -- data -----------------------------------------------------------------------------------


@dataclass
class _Data:
    train: Any  # datasets.Dataset
    held_out: int
    manifest: dict[str, Any]


def _training_data(store: Store, kind: str, options: TrainOptions, scratch: Path,
                   progress: Progress) -> _Data:
    """The export's TRL file for `kind`, read back as a dataset of its train split."""
    from datasets import Dataset
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    from exports.formats import export

    folder = scratch / f"export-{kind}"
    try:
        result = export(store, f"trl-{kind}", folder, since=options.since,
                        eval_fraction=options.eval_fraction,
                        consent_versions=options.consent_versions)
    except InvalidRequest as error:
        raise TrainingError(str(error)) from error
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    count = result.counts.get("train", 0)
    if count < options.min_examples:
        raise TrainingError(
            f"Only {count} {kind.upper()} example(s) in the train split "
            f"({result.counts.get('eval', 0)} held out for evaluation); at least "
            f"{options.min_examples} are needed. Collect more feedback (see "
            f"`python app.py export --counts`), widen --since, or lower --min-examples."
        )
    if kind == "kto" and not (result.desirable and result.undesirable):
        raise TrainingError(
            f"KTO needs both liked and disliked answers; the data holds {result.desirable} "
            f"desirable and {result.undesirable} undesirable. Train with --method sft or dpo."
        )
    progress(f"{kind}: {count} training examples, {result.counts.get('eval', 0)} held out")
    # Progress bars of reading a scratch file say nothing; leave the global switch as found.
    quiet_already = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        dataset = Dataset.from_parquet(str(result.files["train"]),
                                       cache_dir=str(scratch / "datasets-cache"))
    finally:
        if not quiet_already:
            enable_progress_bars()
    dataset = dataset.remove_columns("id")
    if kind == "sft":
        # Prompt and completion apart, so that TRL computes the loss on the answer only: the
        # questions were written by users, not something the model should learn to write.
        dataset = dataset.map(lambda row: {"prompt": row["messages"][:-1],
                                           "completion": row["messages"][-1:]},
                              remove_columns=["messages"])
    return _Data(dataset, result.counts["eval"], manifest)


# -- model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Base:
    model_id: str
    path: str
    family: str
    revision: str | None
    quantization: str
    device: str


def _load_base(options: TrainOptions, progress: Progress):
    import torch

    from engine.loading import default_model_id, load_model

    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if options.quantize == "4bit" and device != "cuda":
        raise TrainingError("QLoRA (--quantize 4bit) needs a CUDA GPU; on a CPU train with "
                            "--quantize none.")
    model_id = default_model_id() if options.base_model == "auto" else options.base_model
    torch.manual_seed(options.seed)
    try:
        model, processor, family, report = load_model(
            model_id, quantize=options.quantize, device=device,
            progress=lambda p: progress(p.message))
    except ModelLoadError as error:
        raise TrainingError(f"The base model could not be loaded: {error}") from error
    base = _Base(model_id, report.path, family.name, report.revision, report.quantization,
                 device)
    return model, processor, base


def lora_targets(model, targets: str) -> str | list[str]:
    """PEFT's `target_modules` for the choice in `TrainOptions.targets`."""
    import torch

    if targets == "all-linear":
        return "all-linear"
    linears = [name for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear)]
    if targets == "language":
        # The language model's layers, whatever the family calls them; the output head is
        # left alone (LoRA on it would also need the tied input embeddings).
        leaves = sorted({name.rsplit(".", 1)[-1] for name in linears
                         if ".language_model." in f".{name}."} - {"lm_head"})
        if not leaves:
            raise TrainingError("This model has no language_model linear layers to adapt; "
                                "use --lora-targets all-linear or name the layers.")
        return rf"(?:.*\.)?language_model\.(?:.*\.)?(?:{'|'.join(map(re.escape, leaves))})"
    wanted = {name.strip() for name in targets.split(",") if name.strip()}
    found = {name.rsplit(".", 1)[-1] for name in linears} & wanted
    if not wanted or found != wanted:
        missing = ", ".join(sorted(wanted - found)) or "(none given)"
        raise TrainingError(
            f"No linear layers named {missing} in this model; use --lora-targets language, "
            "all-linear, or names of its layers such as q_proj,v_proj.")
    return sorted(wanted)


def _lora_config(model, options: TrainOptions):
    from peft import LoraConfig

    return LoraConfig(r=options.rank, lora_alpha=options.alpha or 2 * options.rank,
                      lora_dropout=options.dropout,
                      target_modules=lora_targets(model, options.targets),
                      task_type="CAUSAL_LM")


# -- stages -----------------------------------------------------------------------------------


def _run_stage(kind: str, model, processor, data: _Data, options: TrainOptions,
               scratch: Path, progress: Progress):
    """Train one stage; returns the (PEFT-wrapped) model and what happened."""
    import torch
    from transformers import PrinterCallback, TrainerCallback
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer, SFTConfig, SFTTrainer

    from engine.memory import is_out_of_memory

    learning_rate = options.learning_rate or DEFAULT_LEARNING_RATES[kind]
    gpu = next(model.parameters()).device.type == "cuda"
    settings = dict(
        output_dir=str(scratch / f"run-{kind}"),
        num_train_epochs=options.epochs,
        learning_rate=learning_rate,
        per_device_train_batch_size=options.batch_size,
        gradient_accumulation_steps=options.gradient_accumulation,
        max_length=None,  # never truncate: a cut image token breaks the batch
        bf16=gpu and torch.cuda.is_bf16_supported(),
        use_cpu=not gpu,
        seed=options.seed,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="steps",
        logging_steps=0.05,  # a line every 5% of the steps
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    if kind == "dpo":
        args, trainer_class = DPOConfig(beta=options.beta, **settings), DPOTrainer
    elif kind == "kto":
        args, trainer_class = KTOConfig(beta=options.beta, **settings), KTOTrainer
    else:
        args, trainer_class = SFTConfig(**settings), SFTTrainer

    class Report(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                progress(f"{kind}: step {state.global_step}/{state.max_steps}, "
                         f"loss {logs['loss']:.4f}")

    from accelerate.utils import is_peft_model

    peft = {} if is_peft_model(model) else {"peft_config": _lora_config(model, options)}
    trainer = trainer_class(model=model, args=args, train_dataset=data.train,
                            processing_class=processor, callbacks=[Report()], **peft)
    # Without tqdm, transformers prints every log dict; Report says it in one line instead.
    trainer.remove_callback(PrinterCallback)
    batches = math.ceil(len(data.train) / options.batch_size)
    steps = math.ceil(math.ceil(batches / options.gradient_accumulation) * options.epochs)
    progress(f"{kind}: training about {steps} steps ({options.epochs:g} epoch(s), learning "
             f"rate {learning_rate:g})")
    try:
        outcome = trainer.train()
    except (MemoryError, torch.OutOfMemoryError) as error:
        raise TrainingError(
            f"Ran out of memory while training {kind.upper()}. Lower --batch-size (raise "
            "--gradient-accumulation to keep the effective batch), train on a GPU with "
            "--quantize 4bit, or choose a smaller base model."
        ) from error
    except RuntimeError as error:
        if is_out_of_memory(error):
            raise TrainingError(
                f"Ran out of memory while training {kind.upper()}. Lower --batch-size or train "
                "with --quantize 4bit on a GPU.") from error
        raise
    if not math.isfinite(outcome.training_loss):
        raise TrainingError(f"The {kind.upper()} loss diverged ({outcome.training_loss}); "
                            "lower --learning-rate.")
    losses = tuple((entry["step"], float(entry["loss"])) for entry in trainer.state.log_history
                   if "loss" in entry)
    stage = StageResult(kind=kind, examples=len(data.train), held_out=data.held_out,
                        steps=trainer.state.global_step, learning_rate=learning_rate,
                        train_loss=float(outcome.training_loss), losses=losses,
                        data=data.manifest)
    progress(f"{kind}: done, mean loss {stage.train_loss:.4f}")
    return trainer.model, stage


def _save_adapter(model, folder: Path) -> None:
    # DPO on an adapter keeps a frozen copy named "ref" as its reference: not part of the result.
    model.save_pretrained(str(folder), selected_adapters=["default"])


# -- the card ---------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "trl", "peft", "datasets")}


def _write_card(folder: Path, result: TrainResult, options: TrainOptions, base: _Base,
                store: Store) -> None:
    card = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "method": result.method,
        "base_model": asdict(base),
        "parameters": {key: (str(value) if isinstance(value, Path) else value)
                       for key, value in asdict(options).items()},
        "database": {"path": str(store.path), **store.data_snapshot()},
        "stages": [asdict(stage) for stage in result.stages],
        "duration_s": round(result.duration_s, 1),
        "versions": _versions(),
    }
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    (folder / "README.md").write_text(_card_text(card), encoding="utf-8")


def _card_text(card: Mapping[str, Any]) -> str:
    base = card["base_model"]
    lines = [
        "---",
        f"base_model: {base['model_id']}",
        "library_name: peft",
        "tags: [vqa-studio, lora, trl, " + ", ".join(s["kind"] for s in card["stages"]) + "]",
        "---",
        "",
        f"# LoRA adapter for {base['model_id']}",
        "",
        f"Trained by VQA Studio (`python app.py train --method {card['method']}`) on "
        f"{card['created_at']} in {card['duration_s']:.0f} s on {base['device']} "
        f"({base['quantization']} base). Load it with "
        f"`python app.py --model {base['model_id']} --adapter NAME=PATH`.",
        "",
        "## Data",
        "",
        f"From {card['database']['path']}: {card['database']['conversations']} conversations, "
        f"{card['database']['feedback']} feedback events, the latest at "
        f"{card['database']['latest_feedback_at']}. Only consented conversations, train split "
        "only (split by image, as the export does).",
        "",
        "| stage | train examples | held out | steps | learning rate | mean loss | first logged "
        "loss | last logged loss | feedback from | to |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for stage in card["stages"]:
        losses = stage["losses"]
        dates = stage["data"].get("date_range") or {}
        first = f"{losses[0][1]:.4f}" if losses else "-"
        last = f"{losses[-1][1]:.4f}" if losses else "-"
        lines.append(
            f"| {stage['kind']} | {stage['examples']} | {stage['held_out']} | {stage['steps']} "
            f"| {stage['learning_rate']:g} | {stage['train_loss']:.4f} | {first} | {last} "
            f"| {dates.get('first', '-')} | {dates.get('last', '-')} |")
    lines += ["", "## Parameters", "", "```json",
              json.dumps(card["parameters"], indent=2, ensure_ascii=False), "```", "",
              f"Everything above, with every logged loss, is in `{CARD_FILE}`.", ""]
    return "\n".join(lines)


# -- command line -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None, *, default_db: str | Path | None = None) -> None:
    """`train --out adapters/NAME [--method sft-then-dpo] [--model ID] [--db PATH] ...`."""
    import argparse

    defaults = TrainOptions(out_dir=Path("."))
    parser = argparse.ArgumentParser(
        prog="app.py train",
        description="Train a LoRA adapter on the consented feedback of the train split")
    parser.add_argument("--out", type=Path, required=True,
                        help="new folder for the adapter, e.g. adapters/NAME")
    parser.add_argument("--method", choices=tuple(METHODS), default=defaults.method,
                        help=f"training recipe (default {DEFAULT_METHOD}: SFT on accepted "
                             "answers, then DPO on preferences)")
    parser.add_argument("--model", default=defaults.base_model,
                        help="base model: hub id, local folder or tiny-random[:FAMILY]")
    parser.add_argument("--quantize", choices=("none", "4bit"), default=defaults.quantize,
                        help="4bit: QLoRA on a 4-bit base (CUDA GPU only)")
    parser.add_argument("--db", default=None, help="SQLite file to read")
    parser.add_argument("--since", default=None, help="only feedback from this date (YYYY-MM-DD)")
    parser.add_argument("--consent-version", action="append", default=None,
                        help="only conversations consented under this version (repeatable)")
    parser.add_argument("--eval-fraction", type=float, default=defaults.eval_fraction,
                        help="share held out, as given to the export and evaluate")
    parser.add_argument("--epochs", type=float, default=defaults.epochs, help="per stage")
    parser.add_argument("--lora-rank", type=int, default=defaults.rank)
    parser.add_argument("--lora-alpha", type=int, default=None, help="default: twice the rank")
    parser.add_argument("--lora-targets", default=defaults.targets,
                        help="language (the language model's linear layers), all-linear, or "
                             "comma-separated layer names")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default per stage: " + ", ".join(
                            f"{k} {v:g}" for k, v in DEFAULT_LEARNING_RATES.items()))
    parser.add_argument("--beta", type=float, default=defaults.beta, help="DPO and KTO beta")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--gradient-accumulation", type=int,
                        default=defaults.gradient_accumulation)
    parser.add_argument("--min-examples", type=int, default=defaults.min_examples,
                        help="refuse to train a stage on fewer training examples")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = parser.parse_args(argv)
    db = args.db or default_db
    if db is None:
        parser.error("--db PATH is required")
    options = TrainOptions(
        out_dir=args.out, method=args.method, base_model=args.model, quantize=args.quantize,
        since=args.since,
        consent_versions=tuple(args.consent_version) if args.consent_version else None,
        eval_fraction=args.eval_fraction, epochs=args.epochs, rank=args.lora_rank,
        alpha=args.lora_alpha, targets=args.lora_targets, learning_rate=args.learning_rate,
        beta=args.beta, batch_size=args.batch_size,
        gradient_accumulation=args.gradient_accumulation, min_examples=args.min_examples,
        seed=args.seed)

    def progress(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    try:
        store = Store.existing(db, recover=False)
    except InvalidRequest as error:
        parser.error(str(error))
    with store:
        try:
            result = train(store, options, progress)
        except StudioError as error:
            parser.exit(1, f"{parser.prog}: {error}\n")
    summary = ", ".join(f"{s.kind} {s.examples} examples, {s.steps} steps, loss {s.train_loss:.4f}"
                        for s in result.stages)
    # The base it was trained on goes with it: an adapter fits only that model.
    print(f"wrote {result.out_dir} ({summary}); load it with "
          f"--model {result.base_model} --adapter {result.out_dir.name}={result.out_dir}")
