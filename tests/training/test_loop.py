"""The loop in small: scripted users correct tiny-vqa through the studio's flows, `train`
learns from the store they filled, and the adapter prefers the users' answers.

Everything is real: easy-vqa questions and images, the committed tiny-vqa and its blind-spot
build (no training answer "teal"), `studio.turns.Studio`
on a real SQLite store (every judgement is checked there), TRL and PEFT. The full figures
(accuracy on held-out test questions) come from `python -m training.loop`, docs/evaluation.md.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from engine.local import LocalEngine
from engine.scoring import score_answers
from engine.types import Message
from storage import Store
from studio.turns import Studio
from training.loop import BLIND_SPOT_MODEL, play_users
from training.tiny_vqa import SHAPES, easy_vqa_split
from training.train import TrainOptions, train


@pytest.mark.slow
def test_users_corrections_train_an_adapter_that_prefers_their_answers(tmp_path):
    # The blind spot on purpose: the committed tiny-vqa built with no training answer "teal".
    train_rows = easy_vqa_split("train")
    teal = [row for row in train_rows if row.answer == "teal"][::20][:30]
    others = [row for row in train_rows if row.answer != "teal"][::997][:10]
    rows = teal + others
    engine = LocalEngine(str(BLIND_SPOT_MODEL), quantize="none", device="cpu")
    engine.load()
    with Store(tmp_path / "studio.db") as store:
        counts = play_users(Studio(engine, store), rows, log=lambda message: None)
        assert counts["corrected"] >= len(teal)  # the blind spot is real
        assert counts["liked"] >= 5  # and the rest of the model answers
        result = train(store, TrainOptions(out_dir=tmp_path / "adapter", method="sft",
                                           base_model=str(BLIND_SPOT_MODEL), eval_fraction=0.0,
                                           epochs=5, learning_rate=1e-3,
                                           targets="all-linear", min_examples=2))
    engine.close()
    with sqlite3.connect(tmp_path / "studio.db") as db:
        kinds = dict(db.execute("SELECT kind, count(*) FROM feedback GROUP BY kind"))
        edits = db.execute("SELECT count(*) FROM messages WHERE origin = 'edit'").fetchone()[0]
    assert kinds["like"] == counts["liked"]
    assert kinds["dislike"] == kinds["edit"] == edits == counts["corrected"]
    (stage,) = result.stages
    assert stage.examples == len(rows)  # one accepted answer per question: liked or corrected

    tuned = LocalEngine(str(BLIND_SPOT_MODEL), quantize="none", device="cpu",
                        adapters={"users": str(result.out_dir)})
    tuned.load()
    gained = 0
    for row in teal:
        messages = (Message("user", row.question, (Image.open(Path(row.image)).convert("RGB"),)),)
        base = score_answers(tuned, messages, ["teal", "blue"], None)
        users = score_answers(tuned, messages, ["teal", "blue"], "users")
        gained += (users[0].total_logprob - users[1].total_logprob
                   > base[0].total_logprob - base[1].total_logprob)
    tuned.close()
    # The users' answer gains against a wrong colour on most of the questions they corrected.
    assert gained >= 0.7 * len(teal)


def test_scripted_pickers_leave_the_verdicts_they_gave_in_the_store(tmp_path):
    # Sampled answers of the real tiny-vqa: some pairs hold one right answer, some two, some
    # none; each verdict must be in the SQLite file as the user gave it.
    rows = [row for row in easy_vqa_split("train") if row.answer in SHAPES][::97][:12]
    engine = LocalEngine("tiny-vqa", quantize="none", device="cpu")
    engine.load()
    with Store(tmp_path / "studio.db") as store:
        counts = play_users(Studio(engine, store), rows, log=lambda message: None,
                            pick_every=1)
    engine.close()
    assert counts["picked"] + counts["tie"] + counts["both_bad"] == len(rows)
    with sqlite3.connect(tmp_path / "studio.db") as db:
        kinds = dict(db.execute("SELECT kind, count(*) FROM feedback GROUP BY kind"))
        edits = db.execute("SELECT count(*) FROM messages WHERE origin = 'edit'").fetchone()[0]
        answers = db.execute("SELECT count(*) FROM messages WHERE role = 'assistant' "
                             "AND origin != 'edit'").fetchone()[0]
    assert kinds.get("pick", 0) == counts["picked"]
    assert kinds.get("tie", 0) == counts["tie"]
    assert kinds.get("both_bad", 0) == counts["both_bad"] == edits
    assert answers == 2 * len(rows)  # two sampled answers per question
