"""`--model tiny-vqa` really answers, and `evaluate --vqa` scores it with standard VQA accuracy.

The questions and images are easy-vqa's own (the package from the index); the model is the
committed engine/models/tiny-vqa, loaded and asked through the engine as the studio asks it.
"""

from __future__ import annotations

import json
import shutil

import pytest

import app
from engine.errors import ModelLoadError
from engine.local import LocalEngine
from training import tiny_vqa as build_script
from training.tiny_vqa import easy_vqa_split
from training.vqa import evaluate_vqa, load_vqa, vqa_score

# What the committed checkpoint scored on the whole test split, less a margin for the small
# sample asked here (docs/benchmarks.md has the full figure).
MIN_ACCURACY = 0.9


def test_vqa_score_follows_the_standard_formula():
    ten = ["circle"] * 2 + ["oval"] * 8
    # 2 of 10 humans agree: (2/3 * 8 + 1/3 * 2) / 10 over the leave-one-out subsets.
    assert vqa_score("Circle.", ten) == pytest.approx(0.6)
    assert vqa_score("circle", ["circle"] * 3 + ["oval"] * 7) == pytest.approx(0.9)
    assert vqa_score("the circle", ["circle"] * 4 + ["oval"] * 6) == 1.0
    assert vqa_score("oval", ["circle"] * 10) == 0.0
    # easy-vqa has one answer per question: it must match, after normalization.
    assert vqa_score(" Teal ", ["teal"]) == 1.0
    assert vqa_score("blue", ["teal"]) == 0.0


@pytest.fixture(scope="module")
def tiny_vqa():
    engine = LocalEngine("tiny-vqa", quantize="none", device="cpu")
    engine.load()
    return engine


@pytest.mark.slow
def test_tiny_vqa_answers_easy_vqa_test_questions_through_the_engine(tiny_vqa):
    items = load_vqa("easy-vqa")[:120]
    assert len(load_vqa("easy-vqa")) == 9673
    scores = evaluate_vqa(tiny_vqa, items)
    assert scores["base model"] >= MIN_ACCURACY


@pytest.mark.slow
def test_evaluate_vqa_reads_a_json_dataset_and_prints_the_accuracy(tmp_path, capsys):
    rows = easy_vqa_split("test")[:6]
    for n, row in enumerate(rows):
        shutil.copy(row.image, tmp_path / f"{n}.png")
    dataset = [{"image": f"{n}.png", "question": row.question, "answers": [row.answer]}
               for n, row in enumerate(rows)]
    (tmp_path / "vqa.json").write_text(json.dumps(dataset))
    app.main(["evaluate", "--vqa", str(tmp_path / "vqa.json"), "--model", "tiny-vqa",
              "--quantize", "none"])
    out = capsys.readouterr().out
    assert "VQA accuracy on 6 questions" in out and "base model" in out


def test_every_easy_vqa_question_has_one_kind_that_matches_its_answer():
    colours = {"red", "green", "blue", "black", "gray", "teal", "brown", "yellow"}
    for row in easy_vqa_split("test"):
        kind = build_script.question_kind(row)
        if kind == "naming the shape":
            assert row.answer in build_script.SHAPES
        elif kind == "what colour":
            assert row.answer in colours
        else:
            assert row.answer in ("yes", "no")
            named = {word.strip("?") for word in row.question.split()} & (
                colours | set(build_script.SHAPES))
            assert len(named) == 1
            assert (named <= set(build_script.SHAPES)) == (kind == "yes/no about a shape")


@pytest.mark.parametrize("names", [build_script.SHAPES, build_script.COLOURS])
def test_labels_read_from_yes_no_questions_agree_with_the_named_answers(names):
    rows = easy_vqa_split("train")
    named = {row.image: row.answer for row in rows if row.answer in names}
    from_yes_no = build_script.image_labels([row for row in rows if row.answer not in names],
                                            names)
    both = named.keys() & from_yes_no.keys()
    assert len(both) > 1000
    assert {image: named[image] for image in both} == {image: from_yes_no[image]
                                                       for image in both}


def test_image_labels_read_negations_and_skip_images_that_contradict_themselves():
    row = build_script.VqaRow
    assert build_script.image_labels([
        row("a", "is there not a circle?", "no"),
        row("b", "is no circle present?", "yes"), row("b", "is there a triangle?", "no"),
        row("c", "what shape is in the image?", "circle"), row("c", "is a circle present?", "no"),
        row("d", "is there a red shape?", "yes"),
    ], build_script.SHAPES) == {"a": "circle", "b": "rectangle"}


@pytest.mark.slow
def test_the_build_trains_the_vision_tower_then_writes_a_loadable_model(tmp_path):
    out = tmp_path / "tiny-vqa"
    report = build_script.build(out, epochs=0.1, limit=2000, vision_epochs=1,
                                log=lambda line: None)
    train_rows = easy_vqa_split("train")[:2000]
    labelled = (build_script.image_labels(train_rows, build_script.SHAPES).keys()
                | build_script.image_labels(train_rows, build_script.COLOURS).keys())
    assert report["vision_images"] == len(labelled)
    assert set(report["vision_test_accuracy"]) == {"shape", "colour"}
    assert json.loads((out / "tiny-vqa-build.json").read_text()) == report
    assert not [path.name for path in tmp_path.iterdir() if path != out]  # no staging left
    engine = LocalEngine(str(out), quantize="none", device="cpu")
    engine.load()
    assert engine.capabilities().max_images >= 1


@pytest.mark.slow
def test_score_prints_the_committed_checkpoints_accuracy_by_kind(capsys):
    from engine.loading import TINY_VQA_DIR

    assert build_script.main(["--score", str(TINY_VQA_DIR), "--every", "97"]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines()
                 if ": " in line)
    assert set(lines) == {"all", "naming the shape", "what colour", "yes/no about a colour",
                          "yes/no about a shape"}
    asked = {kind: int(text.split(" / ")[1].rstrip(")")) for kind, text in lines.items()}
    assert asked["all"] == len(easy_vqa_split("test")[::97]) == sum(asked.values()) // 2
    right = int(lines["all"].split("(")[1].split(" / ")[0])
    assert right / asked["all"] >= MIN_ACCURACY


def test_a_missing_tiny_vqa_checkpoint_says_how_to_rebuild_it(tmp_path, monkeypatch):
    import engine.loading

    monkeypatch.setattr(engine.loading, "TINY_VQA_DIR", tmp_path / "gone")
    engine = LocalEngine("tiny-vqa", quantize="none", device="cpu")
    with pytest.raises(ModelLoadError, match="python -m training.tiny_vqa"):
        engine.load()


def test_an_unreadable_vqa_dataset_is_refused_with_a_message(tmp_path, capsys):
    (tmp_path / "bad.json").write_text('[{"question": "no image"}]')
    with pytest.raises(SystemExit) as exit_info:
        app.main(["evaluate", "--vqa", str(tmp_path / "bad.json"), "--model", "tiny-vqa"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Cannot read" in err and "Traceback" not in err
