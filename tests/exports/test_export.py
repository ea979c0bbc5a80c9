"""Export: which feedback becomes which example, and how each trainer format spells it.

One store is built through the real storage API with every kind of feedback; each format is
exported, parsed back into (prompt, answers, images) and compared with the examples expected,
and `datasets.load_dataset` must read every export with matching image counts.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exports.formats import FORMATS, count_examples, export, preview_pairs
from storage import AnswerMeta, AnswerStats, InvalidRequest, Store
from testing.data import OTHER_KEY, png_blob

KEY = "owner-of-the-garden"
THIRD_KEY = "consented-to-an-old-text"
FOURTH_KEY = "no-consent-recorded"
CONSENT = "2026-11"
OLD_CONSENT = "2025-01"
Q1 = "What is in the picture?"
Q2 = "And the border?"
Q3 = "Compare these."
START = datetime(2026, 3, 1, tzinfo=UTC)
LATER = datetime(2026, 4, 2, tzinfo=UTC)


class TickingClock:
    """Every reading is one second after the last, so every event has its own time."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def sha_of(blob) -> str:
    return hashlib.sha256(blob.data).hexdigest()


RED = png_blob((220, 0, 0))
GREEN = png_blob((0, 200, 0))
BLUE = png_blob((0, 0, 210))


def build(store: Store, clock: TickingClock) -> dict[str, str]:
    ids: dict[str, str] = {}

    def answer(
        key, conversation, question, text, *, model="m1", reasoning="", finish="stop", **meta
    ):
        answer_id = store.start_answer(
            key,
            conversation,
            parent_id=question,
            meta=AnswerMeta(model_id=model, sampling={"temperature": 0.7}, seed=7, **meta),
        )
        store.finish_answer(
            answer_id,
            text=text,
            reasoning=reasoning,
            stats=AnswerStats(answer_tokens=3, finish_reason=finish),
        )
        return answer_id

    red = store.put_image(RED)
    garden = store.create_conversation(KEY, "garden", consent_version=CONSENT)
    q1 = store.add_user_message(KEY, garden, text=Q1, image_shas=[red])
    a1 = answer(KEY, garden, q1, "A red square.", reasoning="It is red.")
    a2 = answer(KEY, garden, q1, "A blue circle.")
    a3 = answer(KEY, garden, q1, "Something red.")
    a4 = answer(KEY, garden, q1, "Red.", compare_group="g1", side="A")
    a5 = answer(KEY, garden, q1, "Square.", model="m2", compare_group="g1", side="B")
    a6 = answer(KEY, garden, q1, "Nothing.")
    a7 = answer(KEY, garden, q1, "Tie one.")
    a8 = answer(KEY, garden, q1, "Tie two.")
    a9 = answer(KEY, garden, q1, "Bad one.")
    a10 = answer(KEY, garden, q1, "Bad two.")
    a11 = answer(KEY, garden, q1, "Half", finish="cancelled")
    a12 = answer(KEY, garden, q1, "A red square.")
    answer(KEY, garden, q1, "Regenerated, never judged.")

    store.add_feedback(KEY, a1, "like")
    store.add_feedback(KEY, a2, "like")
    store.add_feedback(KEY, a2, "dislike", reasons=["wrong"], comment="It is a square.")
    ids["e3"] = store.add_edit(KEY, a3, "A red square on white.")
    store.add_pick(KEY, a5, a4, a4)
    store.add_feedback(KEY, a6, "like")
    store.add_feedback(KEY, a6, "clear")
    store.add_pick(KEY, a7, a8, a7)
    store.add_feedback(KEY, a7, "tie", other_message_id=a8)
    store.add_feedback(KEY, a9, "both_bad", other_message_id=a10)
    store.add_feedback(KEY, a11, "like")
    store.add_feedback(KEY, a12, "dislike")
    q2 = store.add_user_message(KEY, garden, text=Q2, parent_id=a1)
    a13 = answer(KEY, garden, q2, "Thin.")
    store.add_feedback(KEY, a13, "like")

    # A second user, a month later: a copy of the first judgement, and a two-image question.
    clock.now = LATER
    store.put_image(RED)
    green = store.put_image(GREEN)
    other = store.create_conversation(OTHER_KEY, "copy", consent_version=CONSENT)
    copy_question = store.add_user_message(OTHER_KEY, other, text=Q1, image_shas=[red])
    copy_good = answer(OTHER_KEY, other, copy_question, "A red square.")
    copy_bad = answer(OTHER_KEY, other, copy_question, "A blue circle.")
    store.add_feedback(OTHER_KEY, copy_good, "like")
    store.add_feedback(OTHER_KEY, copy_bad, "dislike")
    q3 = store.add_user_message(OTHER_KEY, other, text=Q3, image_shas=[green, red])
    good = answer(OTHER_KEY, other, q3, "Green then red.")
    bad = answer(OTHER_KEY, other, q3, "Red then green.")
    store.add_feedback(OTHER_KEY, good, "like")
    store.add_feedback(OTHER_KEY, bad, "dislike")

    # Consent to an older text, and a row without any recorded consent.
    blue = store.put_image(BLUE)
    for key, version in ((THIRD_KEY, OLD_CONSENT), (FOURTH_KEY, "pending")):
        conversation = store.create_conversation(key, "other", consent_version=version)
        question = store.add_user_message(key, conversation, text=f"{key}?", image_shas=[blue])
        liked = answer(key, conversation, question, f"{key} liked")
        disliked = answer(key, conversation, question, f"{key} disliked")
        store.add_feedback(key, liked, "like")
        store.add_feedback(key, disliked, "dislike")
        ids[key] = conversation
    with sqlite3.connect(store.path) as conn:
        # No API stores a conversation without consent; a row from an older tool might.
        conn.execute(
            "UPDATE conversations SET consent_version = '' WHERE id = ?", [ids[FOURTH_KEY]]
        )
    conn.close()
    ids.update(garden=garden, other=other, a1=a1, a2=a2, a3=a3, a4=a4, a5=a5, a13=a13)
    ids.update(red=red, green=green, blue=blue)
    return ids


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export-store")
    clock = TickingClock(START)
    store = Store(folder / "studio.db", clock=clock)
    ids = build(store, clock)
    yield store, ids
    store.close()


# -- the examples expected, in a trainer-neutral spelling --------------------------------
# prompt: ((role, text, image count), ...); images: the shas in order.

P1 = (("user", Q1, 1),)
P1_FOLLOW_UP = (("user", Q1, 1), ("assistant", "A red square.", 0), ("user", Q2, 0))
P3 = (("user", Q3, 2),)


def expected(ids: dict[str, str], kind: str, *, reasoning: bool = False) -> set[tuple]:
    red, green = ids["red"], ids["green"]
    a1 = "<think>\nIt is red.\n</think>\n\nA red square." if reasoning else "A red square."
    if kind == "dpo":
        return {
            (P1, a1, "A blue circle.", (red,)),
            (P1, "A red square on white.", "Something red.", (red,)),
            (P1, "Square.", "Red.", (red,)),
            (P3, "Green then red.", "Red then green.", (green, red)),
        }
    if kind == "kto":
        return {
            (P1, a1, True, (red,)),
            (P1, "A blue circle.", False, (red,)),
            (P1, "A red square.", False, (red,)),
            (P1, "Something red.", False, (red,)),
            (P1, "A red square on white.", True, (red,)),
            (P1, "Bad one.", False, (red,)),
            (P1, "Bad two.", False, (red,)),
            (P1_FOLLOW_UP, "Thin.", True, (red,)),
            (P3, "Green then red.", True, (green, red)),
            (P3, "Red then green.", False, (green, red)),
        }
    return {
        (P1, a1, None, (red,)),
        (P1, "A red square on white.", None, (red,)),
        (P1_FOLLOW_UP, "Thin.", None, (red,)),
        (P3, "Green then red.", None, (green, red)),
    }


# -- reading each format back -------------------------------------------------------------


def sha_from_path(out: Path, relative: str) -> str:
    path = out / relative
    assert path.is_file(), relative
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.stem == digest
    return digest


def split_tags(text: str) -> tuple[int, str]:
    count = 0
    while text.startswith("<image>"):
        count, text = count + 1, text[len("<image>") :]
    assert "<image>" not in text
    return count, text


def read_rows(out: Path, fmt: str) -> list[dict]:
    rows = []
    if fmt.startswith("swift"):
        for name in ("train.jsonl", "eval.jsonl"):
            if (out / name).exists():
                rows += [json.loads(line) for line in (out / name).read_text().splitlines()]
    elif fmt.startswith("llamafactory"):
        for name in ("train.json", "eval.json"):
            if (out / name).exists():
                rows += json.loads((out / name).read_text())
    else:
        import pyarrow.parquet as pq

        for name in ("train.parquet", "eval.parquet"):
            if (out / "data" / name).exists():
                rows += pq.read_table(out / "data" / name).to_pylist()
    return rows


def neutral(out: Path, fmt: str, row: dict) -> tuple:
    """(prompt, completion, rejected-or-label, image shas) from one exported row."""
    trainer, kind = fmt.split("-")
    if trainer == "swift":
        turns = []
        for message in row["messages"]:
            count, text = split_tags(message["content"])
            turns.append((message["role"], text, count))
        images = tuple(sha_from_path(out, p) for p in row["images"])
        prompt, final = tuple(turns[:-1]), turns[-1][1]
        extra = {"dpo": row.get("rejected_response"), "kto": row.get("label"), "sft": None}[kind]
    elif trainer == "llamafactory":
        roles = {"human": "user", "gpt": "assistant"}
        turns = []
        for message in row["conversations"]:
            count, text = split_tags(message["value"])
            turns.append((roles[message["from"]], text, count))
        images = tuple(sha_from_path(out, p) for p in row["images"])
        if kind == "dpo":
            assert row["chosen"]["from"] == row["rejected"]["from"] == "gpt"
            prompt, final, extra = tuple(turns), row["chosen"]["value"], row["rejected"]["value"]
        else:
            prompt, final = tuple(turns[:-1]), turns[-1][1]
            extra = row["kto_tag"] if kind == "kto" else None
    else:
        messages = row["messages"] if kind == "sft" else row["prompt"]
        turns = []
        for message in messages:
            texts = [part["text"] for part in message["content"] if part["type"] == "text"]
            count = sum(part["type"] == "image" for part in message["content"])
            turns.append((message["role"], texts[0], count))
        images = tuple(hashlib.sha256(image["bytes"]).hexdigest() for image in row["images"])
        if kind == "sft":
            prompt, final, extra = tuple(turns[:-1]), turns[-1][1], None
        else:
            answer = row["chosen"] if kind == "dpo" else row["completion"]
            prompt, final = tuple(turns), answer[0]["content"][0]["text"]
            extra = row["rejected"][0]["content"][0]["text"] if kind == "dpo" else row["label"]
    assert sum(count for _, _, count in prompt) == len(images)
    return prompt, final, extra, images


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_holds_exactly_the_expected_examples(built, tmp_path, fmt):
    store, ids = built
    out = tmp_path / fmt
    result = export(store, fmt, out, consent_versions=[CONSENT], eval_fraction=0.0)

    rows = read_rows(out, fmt)
    found = [neutral(out, fmt, row) for row in rows]
    kind = fmt.split("-")[1]
    assert len(found) == len(set(found)), "duplicates leaked"
    assert set(found) == expected(ids, kind)
    assert result.counts == {"train": len(found), "eval": 0}
    text = "\n".join(p.read_text() for p in out.rglob("*.json*"))
    for outsider in (THIRD_KEY, FOURTH_KEY, "Half", "Nothing.", "Tie one.", "Regenerated"):
        assert outsider not in text
    if fmt.startswith("trl"):
        import pyarrow.parquet as pq

        blob = b"".join(p.read_bytes() for p in (out / "data").glob("*.parquet"))
        assert THIRD_KEY.encode() not in blob
        assert {r["id"] for r in pq.read_table(out / "data" / "train.parquet").to_pylist()}
    else:
        shown = {p.stem for p in (out / "images").rglob("*.png")}
        assert shown == {ids["red"], ids["green"]}

    if kind == "kto":
        assert (result.desirable, result.undesirable) == (4, 6)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["format"] == fmt
    assert manifest["total"] == len(found)
    assert manifest["counts"]["train"]["total"] == len(found)
    assert manifest["filters"]["consent_versions"] == [CONSENT]
    assert manifest["models"] == (["m1", "m2"] if kind == "dpo" else ["m1"])
    assert manifest["dropped"][f"{kind}_duplicate"] == {"dpo": 1, "kto": 2, "sft": 1}[kind]
    if kind == "dpo":
        assert manifest["dropped"]["dpo_identical"] == 1
        assert manifest["dropped"]["dpo_duplicate"] == 1

    provenance = {
        line["id"]: line
        for line in map(json.loads, (out / "provenance.jsonl").read_text().splitlines())
    }
    assert set(provenance) == {row["id"] for row in rows}
    for record in provenance.values():
        assert record["conversation_id"] in (ids["garden"], ids["other"])
        for info in record["answers"].values():
            assert info["model_id"] in ("m1", "m2")
            assert info["seed"] == 7
            assert info["sampling"] == {"temperature": 0.7}


@pytest.mark.parametrize("fmt", FORMATS)
def test_datasets_reads_every_export_with_matching_image_counts(built, tmp_path, fmt):
    from datasets import load_dataset

    store, _ = built
    out = tmp_path / fmt
    export(store, fmt, out, consent_versions=[CONSENT], eval_fraction=0.0)
    cache = tmp_path / "hf-cache"
    trainer, kind = fmt.split("-")
    if trainer == "trl":
        dataset = load_dataset(str(out / "data"), cache_dir=str(cache))["train"]
        column = "messages" if kind == "sft" else "prompt"
        for row in dataset:
            slots = sum(
                part["type"] == "image" for message in row[column] for part in message["content"]
            )
            assert slots == len(row["images"])
            assert all(image.size == (8, 6) for image in row["images"])
        return
    name = "train.jsonl" if trainer == "swift" else "train.json"
    dataset = load_dataset("json", data_files=str(out / name), cache_dir=str(cache))["train"]
    for row in dataset:
        turns = row["messages"] if trainer == "swift" else row["conversations"]
        key = "content" if trainer == "swift" else "value"
        assert sum(turn[key].count("<image>") for turn in turns) == len(row["images"])
        assert all((out / path).is_file() for path in row["images"])


def test_llamafactory_dataset_info_describes_both_splits(built, tmp_path):
    store, _ = built
    out = tmp_path / "lf"
    export(store, "llamafactory-dpo", out, consent_versions=[CONSENT], eval_fraction=0.5)
    info = json.loads((out / "dataset_info.json").read_text())
    for name, entry in info.items():
        assert name.startswith("vqa_studio_dpo_")
        assert (out / entry["file_name"]).exists()
        assert entry["formatting"] == "sharegpt"
        assert entry["ranking"] is True
        assert entry["columns"] == {
            "messages": "conversations",
            "images": "images",
            "chosen": "chosen",
            "rejected": "rejected",
        }
    kto = tmp_path / "lf-kto"
    export(store, "llamafactory-kto", kto, consent_versions=[CONSENT])
    entry = next(iter(json.loads((kto / "dataset_info.json").read_text()).values()))
    assert entry["columns"]["kto_tag"] == "kto_tag"
    assert "ranking" not in entry


def test_the_split_follows_the_images_and_is_repeatable(built, tmp_path):
    store, _ = built
    splits = []
    for attempt in range(2):
        out = tmp_path / f"split-{attempt}"
        export(store, "swift-kto", out, consent_versions=[CONSENT], eval_fraction=0.5)
        where = {}
        for split in ("train", "eval"):
            path = out / f"{split}.jsonl"
            rows = (
                [json.loads(line) for line in path.read_text().splitlines()]
                if path.exists()
                else []
            )
            for row in rows:
                where[row["id"]] = (split, tuple(sorted(row["images"])))
        splits.append(where)
    assert splits[0] == splits[1]
    by_images: dict[tuple, set[str]] = {}
    for split, images in splits[0].values():
        by_images.setdefault(images, set()).add(split)
    assert all(len(sides) == 1 for sides in by_images.values())
    assert len(splits[0]) == 10


def test_every_example_of_a_conversation_lands_in_one_split(tmp_path):
    """A later turn's prompt holds the earlier turns: were it in another split than theirs,
    the eval split would be trained on. Turns that add an image, and a conversation that
    opens without one, included; for every split fraction."""
    from exports.examples import in_eval_split
    from exports.formats import collect
    from storage import Store
    from testing.data import CONSENT, KEY, answer, ask, png_blob

    with Store(tmp_path / "studio.db") as store:
        for n in range(6):
            first_image = png_blob((n * 40, 10, 10)) if n % 2 else None
            conversation, question = ask(store, KEY, f"first question {n}", image=first_image)
            parent = answer(store, KEY, conversation, question, f"first answer {n}")
            store.add_feedback(KEY, parent, "like")
            for turn in range(2):
                shas = [store.put_image(png_blob((n * 40, 90, turn * 90)))]
                question = store.add_user_message(KEY, conversation, text=f"next {n}.{turn}",
                                                  image_shas=shas, parent_id=parent)
                parent = answer(store, KEY, conversation, question, f"answer {n}.{turn}")
                store.add_feedback(KEY, parent, "like")
        examples, _ = collect(store, "kto", consent_versions=[CONSENT])
        assert len(examples) == 18
        for fraction in (i / 20 for i in range(1, 20)):
            sides: dict[str, set[bool]] = {}
            for example in examples:
                conversation = example.provenance["conversation_id"]
                sides.setdefault(conversation, set()).add(in_eval_split(example, fraction))
            assert all(len(side) == 1 for side in sides.values()), fraction


def test_unconsented_and_old_consent_data_stay_out(built, tmp_path):
    store, ids = built
    counts = count_examples(store)
    # Any recorded consent: the older text's conversation adds one pair, two labels, one SFT.
    assert counts["swift-dpo"] == 5
    assert counts["trl-kto"] == 12
    assert counts["llamafactory-sft"] == 5
    restricted = count_examples(store, consent_versions=[CONSENT])
    assert restricted == {
        fmt: {"dpo": 4, "kto": 10, "sft": 4}[fmt.split("-")[1]] for fmt in FORMATS
    }
    out = tmp_path / "all"
    export(store, "swift-dpo", out)
    text = (out / "train.jsonl").read_text() + (out / "provenance.jsonl").read_text()
    assert THIRD_KEY in text
    assert FOURTH_KEY not in text
    assert ids[FOURTH_KEY] not in text


def test_filters_since_model_and_reasoning(built, tmp_path):
    store, ids = built
    red, green = ids["red"], ids["green"]
    recent = count_examples(store, since="2026-04-01", consent_versions=[CONSENT])
    assert recent["swift-dpo"] == 2  # the copied pair now counts: its original is older
    assert recent["swift-kto"] == 4
    assert count_examples(store, since=LATER + timedelta(days=1))["swift-dpo"] == 0

    only_m1 = tmp_path / "m1"
    export(store, "swift-dpo", only_m1, model="m1", consent_versions=[CONSENT], eval_fraction=0)
    found = {neutral(only_m1, "swift-dpo", row) for row in read_rows(only_m1, "swift-dpo")}
    assert found == expected(ids, "dpo") - {(P1, "Square.", "Red.", (red,))}

    thinking = tmp_path / "thinking"
    export(store, "trl-sft", thinking, keep_reasoning=True, consent_versions=[CONSENT])
    found = {neutral(thinking, "trl-sft", row) for row in read_rows(thinking, "trl-sft")}
    # With its reasoning the first liked answer no longer equals the other user's copy.
    copy = (P1, "A red square.", None, (red,))
    assert found == expected(ids, "sft", reasoning=True) | {copy}
    assert (P3, "Green then red.", None, (green, red)) in found


@pytest.mark.parametrize("keep_reasoning", [False, True])
def test_an_answer_cut_off_while_thinking_makes_no_example(tmp_path, keep_reasoning):
    """Reasoning and no answer: nothing to learn, kept reasoning or not."""
    from exports.formats import collect
    from testing.data import CONSENT, KEY, answer, ask

    with Store(tmp_path / "studio.db") as store:
        conversation, question = ask(store, KEY, "How many sides?")
        cut = store.start_answer(KEY, conversation, parent_id=question,
                                 meta=AnswerMeta(model_id="m"))
        store.finish_answer(cut, text="", reasoning="Let me count the sides one by",
                            stats=AnswerStats(reasoning_tokens=8, finish_reason="length"))
        good = answer(store, KEY, conversation, question, "Four.")
        store.add_feedback(KEY, good, "like")
        store.add_feedback(KEY, cut, "dislike")
        for kind, empty in (("dpo", "dpo_empty"), ("kto", "kto_empty")):
            examples, dropped = collect(store, kind, consent_versions=[CONSENT],
                                        keep_reasoning=keep_reasoning)
            assert all("Let me count" not in (e.completion + (e.rejected or ""))
                       for e in examples), kind
            assert dropped[empty] == 1, (kind, dropped)


def test_a_correction_corrected_again_is_no_longer_a_demonstration(tmp_path):
    from exports.formats import collect
    from testing.data import CONSENT, KEY, answer, ask

    with Store(tmp_path / "studio.db") as store:
        conversation, question = ask(store, KEY, "How many sides?")
        liked = answer(store, KEY, conversation, question, "Three.")
        store.add_feedback(KEY, liked, "like")
        first = store.add_edit(KEY, liked, "Four sides, first try.")
        store.add_edit(KEY, first, "Four.")
        examples, _ = collect(store, "sft", consent_versions=[CONSENT])
        assert [e.completion for e in examples] == ["Four."]
        labels, _ = collect(store, "kto", consent_versions=[CONSENT])
        assert {(e.completion, e.label) for e in labels} == {
            ("Three.", False), ("Four sides, first try.", False), ("Four.", True)}


def test_preview_shows_the_latest_pairs_with_their_images(built):
    store, ids = built
    pairs = preview_pairs(store, 2)
    assert len(pairs) == 2
    newest = pairs[0]
    assert newest.conversation_id in (ids[THIRD_KEY], ids["other"])
    assert pairs[0].decided_at >= pairs[1].decided_at
    everything = preview_pairs(store, 50)
    assert len(everything) == count_examples(store)["swift-dpo"]
    edit = next(p for p in everything if p.source == "edit")
    assert (edit.chosen, edit.rejected, edit.image_shas) == (
        "A red square on white.",
        "Something red.",
        (ids["red"],),
    )
    assert [turn.text for turn in edit.prompt] == [Q1]


def test_export_refuses_unknown_formats_and_used_folders(built, tmp_path):
    store, _ = built
    with pytest.raises(InvalidRequest):
        export(store, "swift-ppo", tmp_path / "x")
    used = tmp_path / "used"
    used.mkdir()
    (used / "old.jsonl").write_text("{}\n")
    with pytest.raises(InvalidRequest):
        export(store, "swift-dpo", used)
    with pytest.raises(InvalidRequest):
        export(store, "swift-dpo", tmp_path / "y", eval_fraction=1.0)


def test_the_command_line_counts_and_exports_without_recovering(built, tmp_path, capsys):
    from exports.formats import main

    store, _ = built
    main(["--counts", "--consent-version", CONSENT], default_db=store.path)
    printed = dict(line.split() for line in capsys.readouterr().out.splitlines())
    assert printed["swift-dpo"] == "4" and printed["trl-kto"] == "10"
    out = tmp_path / "cli"
    main(
        [
            "--db",
            str(store.path),
            "--format",
            "swift-kto",
            "--out",
            str(out),
            "--eval-fraction",
            "0",
        ]
    )
    assert "desirable:undesirable 5:7" in capsys.readouterr().out
    assert len((out / "train.jsonl").read_text().splitlines()) == 12
    with pytest.raises(SystemExit):
        main(["--format", "swift-kto", "--out", str(out)], default_db=store.path)  # not empty


def test_the_command_line_refuses_a_database_that_is_not_there(tmp_path, capsys):
    """A mistyped --db is said so; opening it would make an empty database and report zero
    examples as if that were the data."""
    from exports.formats import main

    missing = tmp_path / "typo.db"
    for argv in (["--counts"], ["--format", "trl-dpo", "--out", str(tmp_path / "out")]):
        with pytest.raises(SystemExit):
            main(["--db", str(missing), *argv])
        assert f"no database at {missing}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
