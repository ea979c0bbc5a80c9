"""Evaluation runs on a store filled through the real storage API, scored by the tiny Qwen3.5
checkpoint with a LoRA adapter trained here; the pure metrics on known values; the
`python app.py evaluate` command, with its model from flags or from the app's environment
variables; stored runs read back."""

from __future__ import annotations

import hashlib
import sqlite3
from collections import Counter

import pytest
from PIL import Image

import app
from engine.images import encode_png, load_image
from engine.local import LocalEngine
from engine.scoring import score_answers
from engine.tiny import ensure_tiny
from engine.types import Message
from evaluation.agreement import answer_agreement, greedy_answer
from evaluation.head_to_head import head_to_head
from evaluation.history import run_points, run_rows
from evaluation.metrics import (
    bradley_terry,
    exact_match,
    normalize_answer,
    vqa_match,
    wilson_interval,
)
from evaluation.preference import preference_accuracy
from evaluation.prompts import PromptImages, held_out
from evaluation.report import format_report
from evaluation.results import BASE, Report
from evaluation.runs import evaluate, store_report
from exports.formats import collect
from storage import AnswerMeta, AnswerStats, ImageBlob, Store
from storage.evaluations import verdicts
from testing.lora import train_lora

KEY = "evaluation-client"
MODEL = "tiny-random"
QUESTION = "What is in the picture?"
TARGET = "a white horse is next to the river"
ALTERNATIVE = "a red car is parked near the tree"
GREEDY_TOKENS = 10
BETA = 0.1


def _red() -> Image.Image:
    return Image.new("RGB", (64, 48), (200, 30, 30))


def _green() -> Image.Image:
    return Image.new("RGB", (64, 48), (20, 200, 30))


def _blue() -> Image.Image:
    return Image.new("RGB", (64, 48), (20, 30, 200))


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """The adapter trained toward TARGET, once per test session (shared by name with
    tests/engine/test_scoring.py, which trains the same one)."""
    tag = hashlib.sha256(f"{QUESTION}|{TARGET}".encode()).hexdigest()[:10]
    out = tmp_path_factory.getbasetemp() / f"adapter-{tag}"
    if not (out / "adapter_config.json").exists():
        train_lora(ensure_tiny("qwen3_5"), out, question=QUESTION, target=TARGET,
                   image=_red(), steps=25)
    return out


@pytest.fixture(scope="module")
def engine(adapter_dir):
    loaded = LocalEngine(MODEL, quantize="none", device="cpu", adapters={"tuned": adapter_dir})
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def greedy(engine):
    """The base model's own greedy answers to the green and blue questions."""
    def answer(question: str, image: Image.Image) -> str:
        text, error = greedy_answer(engine, (Message("user", question, (image,)),), None,
                                    GREEDY_TOKENS)
        assert error is None and text.strip()
        return text

    return {"green": answer("What colour is it?", _green()),
            "blue": answer("What is it?", _blue())}


def _image_sha(store: Store, image: Image.Image) -> str:
    cleaned = load_image(image)
    return store.put_image(ImageBlob(encode_png(cleaned), "PNG", cleaned.width, cleaned.height))


def _answer(store: Store, conversation: str, question: str, text: str, *, model: str = MODEL,
            adapter: str | None = None, thinking: bool = False, group: str | None = None,
            side: str | None = None) -> str:
    answer_id = store.start_answer(KEY, conversation, parent_id=question, meta=AnswerMeta(
        model_id=model, adapter=adapter, thinking=thinking, compare_group=group, side=side))
    assert store.finish_answer(answer_id, text=text, stats=AnswerStats(answer_tokens=3))
    return answer_id


def _question(store: Store, text: str, image: Image.Image | None = None) -> tuple[str, str]:
    conversation = store.create_conversation(KEY, text, consent_version="test")
    shas = [_image_sha(store, image)] if image is not None else []
    return conversation, store.add_user_message(KEY, conversation, text=text, image_shas=shas)


# (first settings, second settings, verdict) for side-by-side comparisons; a settings tuple
# is (model, adapter, thinking); a verdict "first"/"second" is a pick.
COMPARISONS = [
    ((MODEL, None, False), (MODEL, "tuned", False), "second"),
    ((MODEL, None, False), (MODEL, "tuned", False), "first"),
    ((MODEL, "tuned", False), (MODEL, None, False), "first"),
    ((MODEL, None, False), (MODEL, "tuned", False), "tie"),
    ((MODEL, None, False), (MODEL, "tuned", False), "both_bad"),
    ((MODEL, "other", False), (MODEL, None, False), "second"),
    ((MODEL, "other", False), (MODEL, "tuned", False), "second"),
    ((MODEL, None, True), (MODEL, None, False), "first"),
    # Two samples with the same settings, and answers of another model: no head-to-head.
    ((MODEL, None, False), (MODEL, None, False), "first"),
    (("another/model", None, False), ("another/model", "tuned", False), "first"),
]


def fill(store: Store, greedy: dict[str, str], engine: LocalEngine) -> None:
    """Two preference pairs, three accepted answers and the comparisons above."""
    # A correction toward TARGET: the pair (TARGET > ALTERNATIVE), and TARGET accepted.
    conversation, question = _question(store, QUESTION, _red())
    original = _answer(store, conversation, question, ALTERNATIVE)
    store.add_edit(KEY, original, TARGET)

    # The model's own greedy answer liked, the same tokens reversed disliked.
    tokenizer = engine.processor.tokenizer
    ids = tokenizer(greedy["green"], add_special_tokens=False)["input_ids"]
    conversation, question = _question(store, "What colour is it?", _green())
    liked = _answer(store, conversation, question, greedy["green"])
    disliked = _answer(store, conversation, question, tokenizer.decode(list(reversed(ids))))
    store.add_feedback(KEY, liked, "like")
    store.add_feedback(KEY, disliked, "dislike", reasons=["Wrong or hallucinated"])

    # An accepted answer that matches the greedy one only after normalization.
    conversation, question = _question(store, "What is it?", _blue())
    store.add_feedback(KEY, _answer(store, conversation, question,
                                    "The " + greedy["blue"].upper() + "!"), "like")

    for number, (first, second, verdict) in enumerate(COMPARISONS):
        conversation, question = _question(store, f"comparison {number}?")
        group = f"group-{number}"
        ids = []
        for side, (model, adapter, thinking) in zip("AB", (first, second), strict=True):
            ids.append(_answer(store, conversation, question, f"answer {side} {number}",
                               model=model, adapter=adapter, thinking=thinking, group=group,
                               side=side))
        if verdict in ("first", "second"):
            chosen, other = ids if verdict == "first" else reversed(ids)
            store.add_pick(KEY, chosen, other, ids[0])
        else:
            store.add_feedback(KEY, ids[0], verdict, other_message_id=ids[1])


@pytest.fixture(scope="module")
def filled(tmp_path_factory, greedy, engine):
    store = Store(tmp_path_factory.mktemp("evaluation") / "studio.db")
    fill(store, greedy, engine)
    yield store
    store.close()


@pytest.fixture(scope="module")
def report(engine, filled) -> Report:
    return evaluate(engine, filled, split="all", beta=BETA, max_new_tokens=GREEDY_TOKENS)


def _messages(store: Store, pair) -> tuple[Message, ...]:
    return tuple(Message(turn.role, turn.text,
                         tuple(load_image(store.image_path(sha)) for sha in turn.image_shas))
                 for turn in pair.prompt)


def _pair(store: Store, chosen: str):
    pairs, _ = collect(store, "dpo")
    return next(pair for pair in pairs if pair.completion == chosen)


# -- pure metrics ---------------------------------------------------------------------------


def test_answers_are_normalized_as_in_vqa():
    assert normalize_answer("The Two cats!") == "2 cats"
    assert normalize_answer("an apple, a pear.") == "apple pear"
    assert normalize_answer("Don't  stop\n") == "dont stop"
    assert normalize_answer("3.5 kg; ten") == "3.5 kg 10"
    assert normalize_answer("red/blue") == "red blue"
    assert normalize_answer("  A  ") == ""
    assert exact_match(" two cats ", ["two cats"]) and not exact_match("Two cats", ["two cats"])
    assert vqa_match("Two cats.", ["a dog", "2 cats"]) and not vqa_match("cats", ["2 cats"])


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    low, high = wilson_interval(0, 5)
    assert low == 0.0 and high == pytest.approx(0.434, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_bradley_terry_ranks_by_who_beat_whom():
    games = [("a", "b", 1.0)] * 3 + [("b", "c", 1.0)] * 3 + [("a", "c", 1.0)] * 3
    ranking = bradley_terry(games)
    assert [name for name, _ in ranking] == ["a", "b", "c"]
    assert sum(value for _, value in ranking) == pytest.approx(1.0)
    even = dict(bradley_terry([("x", "y", 1.0), ("y", "x", 1.0), ("x", "y", 0.5)]))
    assert even["x"] == pytest.approx(even["y"])


# -- head-to-head ---------------------------------------------------------------------------


def test_head_to_head_counts_users_verdicts_from_comparisons(filled):
    skipped: Counter = Counter()
    matches, rankings = head_to_head(verdicts(filled), model_id=MODEL, skipped=skipped)
    table = {(m.family, m.first, m.second): (m.wins, m.ties, m.losses, m.both_bad)
             for m in matches}
    assert table == {
        ("adapter", "tuned", BASE): (2, 1, 1, 1),
        ("adapter", "other", BASE): (0, 0, 1, 0),
        ("adapter", "other", "tuned"): (0, 0, 1, 0),
        ("thinking", "thinking on", "thinking off"): (1, 0, 0, 0),
    }
    tuned = next(m for m in matches if m.first == "tuned")
    assert tuned.win_share == pytest.approx(2 / 3)
    assert tuned.interval == wilson_interval(2, 3)
    assert [name for name, _ in rankings["adapter"]] == ["tuned", BASE, "other"]
    assert "thinking" not in rankings  # only two contenders
    assert skipped == {"verdict_same_settings": 1, "verdict_other_model": 1}


# -- preference accuracy and answer agreement -----------------------------------------------


def test_preference_numbers_are_the_models_log_probabilities(engine, filled, report):
    pairs = held_out(collect(filled, "dpo")[0], "all", 0.1)
    margins = {None: [], "tuned": []}
    scores = {}
    for pair in pairs:
        for adapter in (None, "tuned"):
            chosen, rejected = score_answers(engine, _messages(filled, pair),
                                             [pair.completion, pair.rejected], adapter)
            scores[pair.id, adapter] = (chosen.total_logprob, rejected.total_logprob)
            margins[adapter].append(chosen.total_logprob - rejected.total_logprob)
    rewards = [BETA * ((scores[p.id, "tuned"][0] - scores[p.id, None][0])
                       - (scores[p.id, "tuned"][1] - scores[p.id, None][1])) for p in pairs]

    base, tuned = report.preference
    assert (base.contender, tuned.contender) == (BASE, "tuned")
    # The correction, the liked/disliked pair, and eight picks (ties and both-bad make none).
    assert base.pairs == tuned.pairs == len(pairs) == 10
    assert base.mean_margin == pytest.approx(sum(margins[None]) / 10, abs=1e-4)
    assert tuned.mean_margin == pytest.approx(sum(margins["tuned"]) / 10, abs=1e-4)
    assert base.accuracy == sum(1 for m in margins[None] if m > 0) / 10
    assert tuned.mean_reward_margin == pytest.approx(sum(rewards) / 10, abs=1e-4)
    assert tuned.reward_accuracy == sum(1 for r in rewards if r > 0) / 10
    assert base.reward_accuracy is None


def test_the_adapter_prefers_the_answer_it_was_trained_toward(engine, filled):
    pair = _pair(filled, TARGET)
    assert pair.rejected == ALTERNATIVE
    base, tuned = preference_accuracy(engine, [pair], PromptImages(filled), ["tuned"],
                                      beta=BETA)
    assert tuned.accuracy == 1.0 and tuned.accuracy_per_token == 1.0
    assert tuned.reward_accuracy == 1.0 and tuned.mean_reward_margin > 0
    assert tuned.mean_margin > base.mean_margin


def test_the_base_model_prefers_its_own_greedy_answer(engine, filled, greedy):
    pair = _pair(filled, greedy["green"])
    (base,) = preference_accuracy(engine, [pair], PromptImages(filled), [])
    assert base.pairs == 1
    assert base.accuracy == 1.0 and base.accuracy_per_token == 1.0
    assert base.mean_margin > 0


def test_answer_agreement_reproduces_the_accepted_greedy_answers(report):
    base, tuned = report.agreement
    assert base.contender == BASE and base.examples == 3 and base.errors == 0
    # The green answer matches exactly, the blue one after normalization, TARGET not at all.
    assert base.exact_match == pytest.approx(1 / 3)
    assert base.vqa_accuracy == pytest.approx(2 / 3)
    assert tuned.examples == 3


def test_agreement_counts_each_question_once_with_all_its_accepted_answers(engine, filled):
    accepted, _ = collect(filled, "sft")
    green = [e for e in accepted if e.prompt[0].text == "What colour is it?"]
    (base,) = answer_agreement(engine, green * 2, PromptImages(filled), [],
                               max_new_tokens=GREEDY_TOKENS)
    assert base.examples == 1 and base.exact_match == 1.0


def test_the_split_is_the_exports_split_by_image(engine, filled):
    pairs, _ = collect(filled, "dpo")
    held = held_out(pairs, "eval", 0.5)
    trained = held_out(pairs, "train", 0.5)
    assert sorted(p.id for p in held + trained) == sorted(p.id for p in pairs)
    result = evaluate(engine, filled, split="eval", eval_fraction=0.0, generate=False)
    assert result.snapshot["pairs_evaluated"] == 0 and result.snapshot["dpo_pairs"] == 10
    assert result.preference[0].pairs == 0 and result.preference[0].accuracy is None
    assert result.agreement == ()
    assert "Nothing is held out in the eval split" in format_report(result)


# -- the report, stored runs and the command line -------------------------------------------


def test_a_run_is_stored_and_read_back(tmp_path, report):
    with Store(tmp_path / "studio.db") as store:
        first = store_report(store, report, {"tuned": "/adapters/tuned"})
        second = store_report(store, report, {"tuned": "/adapters/tuned"})
        runs = store.list_evaluation_runs()
    assert [run.id for run in runs] == [second.id, first.id]
    run = runs[-1]
    assert run == first
    assert run.model_id == MODEL and run.adapters == {"tuned": "/adapters/tuned"}
    assert run.split == "all" and run.metrics == report.metrics()
    assert run.metrics["preference"]["tuned"]["pairs"] == 10
    assert run.snapshot["latest_feedback_id"] == report.snapshot["latest_feedback_id"]
    assert run.snapshot["latest_feedback_at"] is not None
    rows = run_rows(runs)
    assert rows[0]["run"] == second.id and rows[0]["pairs"] == 10
    assert "tuned" in rows[0]["preference accuracy"]
    assert "tuned vs base model 2-1-1" in rows[0]["head-to-head (W-T-L)"]
    points = run_points(runs)
    assert {p["contender"] for p in points} == {BASE, "tuned"} and len(points) == 4

    from ui.data_tab import evaluation_frames

    with Store(tmp_path / "studio.db", recover=False) as store:
        table, plotted = evaluation_frames(store)
    assert list(table["run"]) == [second.id, first.id]
    assert len(plotted) == 4 and str(plotted["run"].dtype).startswith("datetime64")


def test_with_no_run_yet_the_runs_table_still_names_its_columns(tmp_path):
    from evaluation.history import RUN_COLUMNS
    from ui.data_tab import evaluation_frames

    with Store(tmp_path / "studio.db") as store:
        table, plotted = evaluation_frames(store)
    assert list(table.columns) == list(RUN_COLUMNS) and len(table) == 0 and len(plotted) == 0


def test_the_runs_table_comes_from_its_own_migration(tmp_path):
    Store(tmp_path / "studio.db").close()
    with sqlite3.connect(tmp_path / "studio.db") as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(evaluation_runs)")]
        applied = [row[0] for row in conn.execute("SELECT name FROM _sqlite_migrations")]
    conn.close()
    assert columns == ["id", "created_at", "model_id", "adapters", "split", "eval_fraction",
                       "snapshot", "metrics", "duration_s"]
    assert "0002_evaluation_runs" in applied


def test_the_report_prints_every_table(report):
    text = format_report(report)
    assert "Preference accuracy" in text and "Answer agreement" in text
    assert "tuned vs base model" in text and "thinking on vs thinking off" in text
    assert "Bradley-Terry ranking (adapter): 1. tuned" in text
    assert "verdict_other_model 1" in text


def test_evaluate_command_prints_the_table_and_stores_the_run(tmp_path, capsys, greedy,
                                                             engine, adapter_dir):
    db = tmp_path / "studio.db"
    with Store(db) as store:
        fill(store, greedy, engine)
    app.main(["evaluate", "--db", str(db), "--model", MODEL, "--quantize", "none",
              "--adapter", f"tuned={adapter_dir}", "--split", "all", "--limit", "3",
              "--max-new-tokens", str(GREEDY_TOKENS)])
    out = capsys.readouterr().out
    assert f"Evaluation of {MODEL} with adapters tuned on the all split" in out
    assert "3 of 10 preference pairs, 3 of 3 accepted answers" in out
    lines = [line.split() for line in out.splitlines()]
    assert ["base", "model", "3", "0.33", "0.67", "0"] in lines  # answer agreement row
    assert "Stored as run" in out
    with Store(db, recover=False) as store:
        (run,) = store.list_evaluation_runs()
    assert run.adapters == {"tuned": str(adapter_dir)}
    assert run.metrics["agreement"]["base model"]["exact_match"] == pytest.approx(1 / 3)


def test_evaluate_command_evaluates_the_model_the_apps_environment_names(
        tmp_path, capsys, monkeypatch, greedy, engine, adapter_dir):
    # A Space sets its model, adapters and database as VQA_STUDIO_* variables, not as flags:
    # the command must evaluate that model. Without them it would pick this hardware's
    # default model (not in the test cache) and look for the default database.
    db = tmp_path / "space.db"
    with Store(db) as store:
        fill(store, greedy, engine)
    monkeypatch.setenv("VQA_STUDIO_MODEL", MODEL)
    monkeypatch.setenv("VQA_STUDIO_QUANTIZE", "none")
    monkeypatch.setenv("VQA_STUDIO_ADAPTER", f"tuned={adapter_dir}")
    monkeypatch.setenv("VQA_STUDIO_DB", str(db))
    app.main(["evaluate", "--split", "all", "--no-generate"])
    out = capsys.readouterr().out
    assert f"Evaluation of {MODEL} with adapters tuned on the all split" in out
    with Store(db, recover=False) as store:
        (run,) = store.list_evaluation_runs()
    assert run.model_id == MODEL and run.adapters == {"tuned": str(adapter_dir)}
