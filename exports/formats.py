"""Write stored feedback as training data for ms-swift, TRL or LLaMA-Factory.

`export(store, format, out_dir)` gathers the examples of one kind (see exports.examples for
which feedback makes which example), keeps only conversations with a recorded consent (and,
if asked, only some consent versions), applies the filters, removes duplicates (same images,
prompt and answers), splits train/eval by conversation (by the opening question's first
image, so conversations that open on one picture go together too), and writes into an empty
`out_dir` (a split without examples gets no file):

- swift-dpo | swift-kto | swift-sft: train.jsonl and eval.jsonl in ms-swift's standard
  format (`messages`, `images`, plus `rejected_response` or `label`), one `<image>` tag per
  image in the user turns. ms-swift reads a relative image path against the folder it runs
  in (or ROOT_IMAGE_DIR), not against the dataset file: paths are relative to out_dir by
  default (run ms-swift from there, or set ROOT_IMAGE_DIR=out_dir) and absolute with
  `absolute_image_paths`, which works from anywhere on the machine that exported.
- trl-dpo | trl-kto | trl-sft: data/train.parquet and data/eval.parquet written with
  Hugging Face `datasets`, images embedded as bytes; conversational columns with
  {"type": "image"} content parts (`prompt`/`chosen`/`rejected`, `prompt`/`completion`/
  `label`, or `messages`), plus `images`. `load_dataset(out_dir / "data")` gives the splits
  "train" and "test" (datasets reads "eval" as the test split).
- llamafactory-dpo | -kto | -sft: train.json and eval.json in LLaMA-Factory's sharegpt
  format with a dataset_info.json describing both (`ranking` for DPO, `kto_tag` for KTO);
  image paths are relative to out_dir, LLaMA-Factory's default media_dir when dataset_dir
  is out_dir (absolute with `absolute_image_paths`, which LLaMA-Factory reads as they are).

Every format also gets manifest.json (counts, filters, models, date range, schema version)
and provenance.jsonl: for each example id, the conversation, message and feedback ids, the
model, adapter, settings and seed behind each answer. Examples carry only their `id` as an
extra key, which all three trainers drop. Images the JSON formats use are copied under
out_dir/images/; the manifest's `image_paths` says how the files name them.

No text a user typed or a model wrote can act as a control token in any format: examples come
with control tokens removed (exports.examples), so the only `<image>` tags are the ones
written here, one per image, and the only "<think>" tags the ones `keep_reasoning` writes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from exports.examples import KINDS, Example, Kind, Turn, conversation_examples, in_eval_split
from storage import images
from storage.errors import InvalidRequest
from storage.store import Store

SCHEMA_VERSION = 1
TRAINERS = ("swift", "trl", "llamafactory")
FORMATS = tuple(f"{trainer}-{kind}" for trainer in TRAINERS for kind in KINDS)
SPLITS = ("train", "eval")
DATASET_PREFIX = "vqa_studio"


@dataclass(frozen=True)
class ExportResult:
    format: str
    out_dir: Path
    counts: dict[str, int]  # split -> number of examples
    files: dict[str, Path]
    images: int  # distinct images the examples show
    # KTO only: desirable and undesirable examples, to weigh the loss.
    desirable: int | None = None
    undesirable: int | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class PreviewPair:
    """A DPO pair as a data tab shows it."""

    prompt: tuple[Turn, ...]
    chosen: str
    rejected: str
    source: str
    image_shas: tuple[str, ...]
    conversation_id: str
    decided_at: str


def collect(
    store: Store,
    kind: Kind,
    *,
    since: date | datetime | str | None = None,
    model: str | None = None,
    keep_reasoning: bool = False,
    consent_versions: Collection[str] | None = None,
) -> tuple[list[Example], Counter[str]]:
    """The deduplicated examples of one kind, oldest decision first, and what was dropped."""
    by_kind, dropped = _collect_all(
        store,
        since=since,
        model=model,
        keep_reasoning=keep_reasoning,
        consent_versions=consent_versions,
    )
    kind_dropped = Counter({k: v for k, v in dropped.items() if k.startswith(kind + "_")})
    return by_kind[kind], kind_dropped


def _collect_all(
    store: Store,
    *,
    since: date | datetime | str | None,
    model: str | None,
    keep_reasoning: bool,
    consent_versions: Collection[str] | None,
) -> tuple[dict[str, list[Example]], Counter[str]]:
    since_text = _since_timestamp(since)
    accepted = set(consent_versions) if consent_versions is not None else None
    dropped: Counter[str] = Counter()
    by_kind: dict[str, list[Example]] = {kind: [] for kind in KINDS}
    seen: dict[str, set[str]] = {kind: set() for kind in KINDS}
    candidates: list[Example] = []
    for conversation in store.iter_conversations(since=since_text):
        consent = (conversation.consent_version or "").strip()
        if not consent or (accepted is not None and consent not in accepted):
            continue
        found, lost = conversation_examples(conversation, keep_reasoning=keep_reasoning)
        candidates += found
        dropped += lost
    candidates.sort(key=lambda example: (example.decided_at, example.id))
    for example in candidates:
        if since_text is not None and example.decided_at < since_text:
            continue
        if model is not None and not _only_model(example, model):
            continue
        if example.content_key in seen[example.kind]:
            dropped[f"{example.kind}_duplicate"] += 1
            continue
        seen[example.kind].add(example.content_key)
        by_kind[example.kind].append(example)
    return by_kind, dropped


def _only_model(example: Example, model: str) -> bool:
    """True when every answer in the example was written by `model` (a correction counts
    as the model's whose answer it corrects)."""
    answers = example.provenance.get("answers", {})
    return bool(answers) and all(info.get("model_id") == model for info in answers.values())


def _since_timestamp(since: date | datetime | str | None) -> str | None:
    if since is None:
        return None
    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since) if "T" in since else date.fromisoformat(since)
        except ValueError:
            raise InvalidRequest(f"Cannot read {since!r} as a date.") from None
    if isinstance(since, datetime):
        moment = since if since.tzinfo else since.replace(tzinfo=UTC)
        return moment.astimezone(UTC).isoformat(timespec="milliseconds")
    return since.isoformat()


def count_examples(
    store: Store,
    *,
    since: date | datetime | str | None = None,
    model: str | None = None,
    keep_reasoning: bool = False,
    consent_versions: Collection[str] | None = None,
) -> dict[str, int]:
    """How many examples each format would hold (train and eval together), writing nothing."""
    by_kind, _ = _collect_all(
        store,
        since=since,
        model=model,
        keep_reasoning=keep_reasoning,
        consent_versions=consent_versions,
    )
    return {fmt: len(by_kind[fmt.split("-", 1)[1]]) for fmt in FORMATS}


def preview_pairs(store: Store, n: int = 5, *, keep_reasoning: bool = False) -> list[PreviewPair]:
    """The `n` most recently decided DPO pairs, newest first."""
    pairs, _ = collect(store, "dpo", keep_reasoning=keep_reasoning)
    return [
        PreviewPair(
            prompt=pair.prompt,
            chosen=pair.completion,
            rejected=pair.rejected or "",
            source=pair.source,
            image_shas=pair.image_shas,
            conversation_id=pair.provenance["conversation_id"],
            decided_at=pair.decided_at,
        )
        for pair in reversed(pairs[-n:] if n > 0 else [])
    ]


def export(
    store: Store,
    format: str,
    out_dir: Path | str,
    *,
    since: date | datetime | str | None = None,
    model: str | None = None,
    keep_reasoning: bool = False,
    eval_fraction: float = 0.1,
    consent_versions: Collection[str] | None = None,
    absolute_image_paths: bool = False,
) -> ExportResult:
    """Write the examples for `format` (one of FORMATS) into `out_dir`, which must be empty
    or not exist yet. `since` keeps feedback given on or after that date (UTC), `model`
    keeps examples whose answers all come from that model id. `absolute_image_paths` makes
    the JSON formats name their copied images by absolute path (TRL embeds the images)."""
    if format not in FORMATS:
        raise InvalidRequest(f"Unknown export format {format!r}; use one of {', '.join(FORMATS)}.")
    if not 0.0 <= eval_fraction < 1.0:
        raise InvalidRequest("The eval fraction must be at least 0 and below 1.")
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidRequest(f"{out} is not an empty folder; export into a new one.")
    trainer, kind = format.split("-", 1)
    examples, dropped = collect(
        store,
        kind,  # type: ignore[arg-type]
        since=since,
        model=model,
        keep_reasoning=keep_reasoning,
        consent_versions=consent_versions,
    )
    present = []
    for example in examples:
        if all(store.image_path(sha).exists() for sha in example.image_shas):
            present.append(example)
        else:
            dropped[f"{kind}_missing_image"] += 1
    splits: dict[str, list[Example]] = {"train": [], "eval": []}
    for example in present:
        splits["eval" if in_eval_split(example, eval_fraction) else "train"].append(example)

    out.mkdir(parents=True, exist_ok=True)
    image_root = out.resolve() / "images" if absolute_image_paths else Path("images")
    writer = {"swift": _write_swift, "trl": _write_trl, "llamafactory": _write_llamafactory}
    files = writer[trainer](store, kind, splits, out, image_root)
    files["provenance"] = _write_provenance(out, splits)
    shas = sorted({sha for example in present for sha in example.image_shas})
    desirable = sum(1 for e in present if e.label) if kind == "kto" else None
    undesirable = sum(1 for e in present if e.label is False) if kind == "kto" else None
    result = ExportResult(
        format=format,
        out_dir=out,
        counts={split: len(rows) for split, rows in splits.items()},
        files=files,
        images=len(shas),
        desirable=desirable,
        undesirable=undesirable,
    )
    filters = {
        "since": _since_timestamp(since),
        "model": model,
        "keep_reasoning": keep_reasoning,
        "eval_fraction": eval_fraction,
        "consent_versions": sorted(consent_versions) if consent_versions is not None else None,
        "absolute_image_paths": absolute_image_paths,
    }
    paths = _image_paths_note(trainer, image_root)
    files["manifest"] = _write_manifest(out, result, present, splits, dropped, filters, paths)
    return result


# -- shared pieces -----------------------------------------------------------------------


def _image_name(store: Store, sha: str, root: Path) -> str:
    """How the training files name an image: under `root`, "images" (relative to out_dir)
    or out_dir/images as an absolute path."""
    info = store.image_info(sha)
    return images.image_file(root, sha, info.format).as_posix()


def _copy_images(store: Store, out: Path, examples: Iterable[Example]) -> None:
    for sha in sorted({sha for example in examples for sha in example.image_shas}):
        target = out / _image_name(store, sha, Path("images"))
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.image_path(sha), target)


def _image_paths_note(trainer: str, image_root: Path) -> dict[str, str]:
    """The manifest's word on how the training files find their images."""
    if trainer == "trl":
        return {"style": "embedded", "how": "the images are stored as bytes in the parquet files"}
    if image_root.is_absolute():
        return {
            "style": "absolute",
            "root": image_root.as_posix(),
            "how": "paths name the copies under images/ on this machine; training can start "
            "anywhere here, but moving the folder breaks them (export again without "
            "absolute_image_paths to move it)",
        }
    how = {
        "swift": "relative to this folder: start ms-swift from it, or set ROOT_IMAGE_DIR to "
        "its absolute path (ms-swift does not read them relative to the dataset file); or "
        "export with absolute_image_paths",
        "llamafactory": "relative to this folder: give it as dataset_dir (LLaMA-Factory's "
        "default media_dir), or set media_dir to it; or export with absolute_image_paths",
    }[trainer]
    return {"style": "relative", "root": "images", "how": how}


def _user_text_with_tags(turn: Turn) -> str:
    # The examples' text holds no control tokens, so these are the only media tags.
    return "<image>" * len(turn.image_shas) + turn.text


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _write_provenance(out: Path, splits: dict[str, list[Example]]) -> Path:
    rows = (
        {
            "id": example.id,
            "split": split,
            "kind": example.kind,
            "source": example.source,
            "decided_at": example.decided_at,
            "label": example.label,
            "image_shas": list(example.image_shas),
            **example.provenance,
        }
        for split in SPLITS
        for example in splits[split]
    )
    return _write_jsonl(out / "provenance.jsonl", rows)


def _write_manifest(
    out: Path,
    result: ExportResult,
    examples: list[Example],
    splits: dict[str, list[Example]],
    dropped: Counter[str],
    filters: dict[str, Any],
    image_paths: dict[str, str],
) -> Path:
    models = sorted(
        {
            info["model_id"]
            for example in examples
            for info in example.provenance.get("answers", {}).values()
            if info.get("model_id")
        }
    )
    decided = sorted(example.decided_at for example in examples)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "format": result.format,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "counts": {
            split: dict(Counter(example.source for example in splits[split]), total=len(rows))
            for split, rows in splits.items()
        },
        "total": result.total,
        "images": result.images,
        "kto_balance": (
            {"desirable": result.desirable, "undesirable": result.undesirable}
            if result.desirable is not None
            else None
        ),
        "models": models,
        "date_range": {"first": decided[0], "last": decided[-1]} if decided else None,
        "filters": filters,
        "split_rule": "sha256 of the opening question's first image hash (none: its text)",
        "dropped": dict(sorted(dropped.items())),
        "image_paths": image_paths,
        "control_tokens": "removed from every question, answer, correction and reasoning",
        "files": {name: path.relative_to(out).as_posix() for name, path in result.files.items()},
    }
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


# -- ms-swift ------------------------------------------------------------------------------


def _swift_messages(example: Example, final: str | None) -> list[dict[str, str]]:
    messages = [
        {
            "role": turn.role,
            "content": _user_text_with_tags(turn) if turn.role == "user" else turn.text,
        }
        for turn in example.prompt
    ]
    if final is not None:
        messages.append({"role": "assistant", "content": final})
    return messages


def _write_swift(
    store: Store, kind: str, splits: dict[str, list[Example]], out: Path, image_root: Path
) -> dict[str, Path]:
    files = {}
    for split, examples in splits.items():
        if not examples:
            continue  # an empty file would trip the loaders
        rows = []
        for example in examples:
            row: dict[str, Any] = {
                "id": example.id,
                "messages": _swift_messages(example, example.completion),
                "images": [_image_name(store, sha, image_root) for sha in example.image_shas],
            }
            if kind == "dpo":
                row["rejected_response"] = example.rejected or ""
            elif kind == "kto":
                row["label"] = bool(example.label)
            rows.append(row)
        files[split] = _write_jsonl(out / f"{split}.jsonl", rows)
    _copy_images(store, out, (e for rows in splits.values() for e in rows))
    return files


# -- LLaMA-Factory ---------------------------------------------------------------------------


def _sharegpt_turns(example: Example) -> list[dict[str, str]]:
    return [
        {"from": "human", "value": _user_text_with_tags(turn)}
        if turn.role == "user"
        else {"from": "gpt", "value": turn.text}
        for turn in example.prompt
    ]


def _write_llamafactory(
    store: Store, kind: str, splits: dict[str, list[Example]], out: Path, image_root: Path
) -> dict[str, Path]:
    files = {}
    info = {}
    for split, examples in splits.items():
        if not examples:
            continue  # an empty file would trip the loaders
        rows = []
        for example in examples:
            conversations = _sharegpt_turns(example)
            row: dict[str, Any] = {"id": example.id}
            if kind == "dpo":
                row["conversations"] = conversations
                row["chosen"] = {"from": "gpt", "value": example.completion}
                row["rejected"] = {"from": "gpt", "value": example.rejected or ""}
            else:
                conversations.append({"from": "gpt", "value": example.completion})
                row["conversations"] = conversations
                if kind == "kto":
                    row["kto_tag"] = bool(example.label)
            row["images"] = [_image_name(store, sha, image_root) for sha in example.image_shas]
            rows.append(row)
        path = out / f"{split}.json"
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        files[split] = path
        columns = {"messages": "conversations", "images": "images"}
        entry: dict[str, Any] = {"file_name": path.name, "formatting": "sharegpt"}
        if kind == "dpo":
            entry["ranking"] = True
            columns.update(chosen="chosen", rejected="rejected")
        elif kind == "kto":
            columns["kto_tag"] = "kto_tag"
        entry["columns"] = columns
        entry["tags"] = {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
        }
        info[f"{DATASET_PREFIX}_{kind}_{split}"] = entry
    dataset_info = out / "dataset_info.json"
    dataset_info.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    files["dataset_info"] = dataset_info
    _copy_images(store, out, (e for rows in splits.values() for e in rows))
    return files


# -- TRL -------------------------------------------------------------------------------------


def _trl_message(role: str, text: str, image_count: int = 0) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "image", "text": None} for _ in range(image_count)]
    parts.append({"type": "text", "text": text})
    return {"role": role, "content": parts}


def _trl_prompt(example: Example) -> list[dict[str, Any]]:
    return [_trl_message(turn.role, turn.text, len(turn.image_shas)) for turn in example.prompt]


def _trl_features(kind: str) -> Any:
    from datasets import Features, Image, List, Value

    message = {
        "role": Value("string"),
        "content": List({"type": Value("string"), "text": Value("string")}),
    }
    columns: dict[str, Any] = {"id": Value("string")}
    if kind == "dpo":
        columns.update(prompt=List(message), chosen=List(message), rejected=List(message))
    elif kind == "kto":
        columns.update(prompt=List(message), completion=List(message), label=Value("bool"))
    else:
        columns["messages"] = List(message)
    columns["images"] = List(Image())
    return Features(columns)


def _write_trl(
    store: Store, kind: str, splits: dict[str, list[Example]], out: Path, image_root: Path
) -> dict[str, Path]:
    del image_root  # the images travel inside the parquet files
    # Imported here: `datasets` is heavy and only exports need it.
    from datasets import Dataset
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    features = _trl_features(kind)
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, examples in splits.items():
        if not examples:
            continue  # an empty file would trip the loaders
        rows = []
        for example in examples:
            row: dict[str, Any] = {"id": example.id}
            prompt = _trl_prompt(example)
            if kind == "dpo":
                row["prompt"] = prompt
                row["chosen"] = [_trl_message("assistant", example.completion)]
                row["rejected"] = [_trl_message("assistant", example.rejected or "")]
            elif kind == "kto":
                row["prompt"] = prompt
                row["completion"] = [_trl_message("assistant", example.completion)]
                row["label"] = bool(example.label)
            else:
                row["messages"] = [*prompt, _trl_message("assistant", example.completion)]
            row["images"] = [
                {"bytes": store.image_path(sha).read_bytes(), "path": store.image_path(sha).name}
                for sha in example.image_shas
            ]
            rows.append(row)
        dataset = Dataset.from_list(rows, features=features)
        path = data_dir / f"{split}.parquet"
        # Progress bars would land in the app's log; leave the global switch as found.
        quiet_already = are_progress_bars_disabled()
        disable_progress_bars()
        try:
            dataset.to_parquet(str(path))
        finally:
            if not quiet_already:
                enable_progress_bars()
        files[split] = path
    return files


# -- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None, *, default_db: str | Path | None = None) -> None:
    """`export --format FMT --out DIR [--db PATH] [filters]`, or `export --counts`.

    Opens the database without recovery, so it is safe to run while the app serves."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="app.py export", description="Write stored feedback as training data"
    )
    parser.add_argument("--format", choices=FORMATS, help="trainer and kind of examples")
    parser.add_argument("--out", type=Path, help="new, empty folder to write into")
    parser.add_argument("--db", default=None, help="SQLite file to read")
    parser.add_argument("--since", default=None, help="only feedback from this date (YYYY-MM-DD)")
    parser.add_argument("--model", default=None, help="only answers written by this model id")
    parser.add_argument("--keep-reasoning", action="store_true", help="keep <think> reasoning")
    parser.add_argument("--eval-fraction", type=float, default=0.1, help="share held out")
    parser.add_argument(
        "--consent-version",
        action="append",
        default=None,
        help="only conversations consented under this version (repeatable; default: any)",
    )
    parser.add_argument(
        "--absolute-image-paths",
        action="store_true",
        help="ms-swift and LLaMA-Factory files name images by absolute path, so training "
        "can start from any folder (the export folder must then stay where it is)",
    )
    parser.add_argument(
        "--counts", action="store_true", help="print how many examples each format would hold"
    )
    args = parser.parse_args(argv)
    db = args.db or default_db
    if db is None:
        parser.error("--db PATH is required")
    if not args.counts and (args.format is None or args.out is None):
        parser.error("--format and --out are required (or --counts)")
    filters = {
        "since": args.since,
        "model": args.model,
        "keep_reasoning": args.keep_reasoning,
        "consent_versions": args.consent_version,
    }
    try:
        store = Store.existing(db, recover=False)
    except InvalidRequest as error:
        parser.error(str(error))
    with store:
        try:
            if args.counts:
                _print_counts(count_examples(store, **filters))
                return
            result = export(
                store,
                args.format,
                args.out,
                eval_fraction=args.eval_fraction,
                absolute_image_paths=args.absolute_image_paths,
                **filters,
            )
        except InvalidRequest as error:
            parser.error(str(error))
        except OSError as error:  # --out under a file, a folder it may not write, a full disk
            parser.exit(1, f"{parser.prog}: cannot write {args.out}: {error.strerror}\n")
    balance = ""
    if result.desirable is not None:
        balance = f", desirable:undesirable {result.desirable}:{result.undesirable}"
    print(
        f"wrote {result.counts['train']} train and {result.counts['eval']} eval examples "
        f"({result.images} images{balance}) to {result.out_dir}"
    )


def _print_counts(counts: dict[str, int]) -> None:
    """One line per format. A reader that stops early (`| head`) ends the command quietly, as
    it would end any other: the rest has nowhere to go."""
    try:
        for fmt, count in counts.items():
            print(f"{fmt:18} {count}", flush=True)
    except BrokenPipeError:
        # Python would report the pipe again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
