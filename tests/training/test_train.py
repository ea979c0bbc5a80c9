"""`python app.py train`: from a real store to a LoRA adapter the app loads, or a clear refusal.

Feedback is written through the real Store into a real SQLite file; TRL and PEFT train on the
tiny checkpoints on the CPU; the adapter is then loaded by the engine the way `--adapter` does
and must prefer the answers users preferred. Every refusal leaves no folder behind.
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

import app
from engine.local import LocalEngine
from engine.scoring import score_answers
from engine.types import Message
from exports.formats import export
from storage import Store
from testing.data import COLORS, fill_colors
from training.train import TrainingError, TrainOptions, train

QUESTION = "What color is the square?"


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("train-store") / "studio.db"
    with Store(path) as store:
        fill_colors(store)
    return path


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.slow
def test_train_command_writes_an_adapter_that_prefers_the_users_answers(
    filled_db, tmp_path, capsys
):
    out = tmp_path / "adapters" / "colors"
    app.main(["train", "--db", str(filled_db), "--out", str(out), "--model", "tiny-random:llava",
              "--eval-fraction", "0", "--epochs", "4", "--learning-rate", "5e-3",
              "--batch-size", "4"])
    captured = capsys.readouterr()
    assert "sft: step" in captured.err and "dpo: step" in captured.err  # progress
    assert f"--model tiny-random:llava --adapter colors={out}" in captured.out
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md",
            "training.json"} <= set(leftovers(out))
    assert leftovers(out.parent) == ["colors"]  # no staging folder left
    # Readable as any new folder is (the parent was made by mkdir), not owner-only.
    assert out.stat().st_mode & 0o777 == out.parent.stat().st_mode & 0o777
    card = json.loads((out / "training.json").read_text())
    assert card["method"] == "sft-then-dpo"
    assert [stage["kind"] for stage in card["stages"]] == ["sft", "dpo"]
    sft, dpo = card["stages"]
    # The card's counts are the export's: one demonstration and two pairs per colour.
    assert (sft["examples"], dpo["examples"]) == (len(COLORS), 2 * len(COLORS))
    assert sft["losses"] and dpo["losses"] and sft["losses"][-1][1] < sft["losses"][0][1]
    assert card["database"]["feedback"] == 3 * len(COLORS)
    assert card["parameters"]["rank"] == 8
    assert "| sft | 8 |" in (out / "README.md").read_text()
    # A frozen DPO reference copy of the adapter is not part of what was written.
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert not (out / "ref").exists()

    engine = LocalEngine("tiny-random:llava", quantize="none", device="cpu",
                         adapters={"colors": out})
    engine.load()
    wins = 0
    for name, rgb in COLORS.items():
        messages = (Message("user", QUESTION, (Image.new("RGB", (32, 32), rgb),)),)
        base = score_answers(engine, messages, [name, "purple"], None)
        tuned = score_answers(engine, messages, [name, "purple"], "colors")
        # The users' answer gains against the one they rejected.
        wins += (tuned[0].total_logprob - tuned[1].total_logprob
                 > base[0].total_logprob - base[1].total_logprob)
    assert wins == len(COLORS)


@pytest.mark.slow
def test_only_the_train_split_is_trained_on(filled_db, tmp_path):
    with Store(filled_db, recover=False) as store:
        expected = export(store, "trl-kto", tmp_path / "export", eval_fraction=0.4).counts
        result = train(store, TrainOptions(out_dir=tmp_path / "kto", method="kto",
                                           base_model="tiny-random:llava", eval_fraction=0.4,
                                           min_examples=2))
    (stage,) = result.stages
    assert expected["eval"] > 0
    assert (stage.examples, stage.held_out) == (expected["train"], expected["eval"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "ppo"], "invalid choice: 'ppo'"),
        (["--lora-rank", "0"], "LoRA rank must be at least 1"),
        (["--model", "/nowhere/model"], "base model could not be loaded"),
        (["--min-examples", "100"], "Only 8 SFT example(s) in the train split"),
        (["--min-examples", "0"], "minimum number of examples must be at least 1"),
        (["--method", "kto", "--batch-size", "1"], "KTO needs a batch size of at least 2"),
        (["--quantize", "4bit"], "QLoRA (--quantize 4bit) needs a CUDA GPU"),
    ],
)
def test_bad_input_gets_a_clear_message_and_leaves_no_adapter(
    filled_db, tmp_path, capsys, argv, message
):
    if "4bit" in argv and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: 4-bit training is allowed")
    out = tmp_path / "adapters" / "bad"
    with pytest.raises(SystemExit) as exit_info:
        app.main(["train", "--db", str(filled_db), "--out", str(out),
                  "--model", "tiny-random:llava", "--eval-fraction", "0", *argv])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert leftovers(tmp_path / "adapters") == []
    if not {"--model", "--quantize"} & set(argv):  # refused before loading: no folder at all
        assert not (tmp_path / "adapters").exists()


def test_an_empty_store_is_refused_before_the_model_loads(tmp_path):
    with Store(tmp_path / "empty.db") as store:
        with pytest.raises(TrainingError, match="Only 0 SFT example"):
            train(store, TrainOptions(out_dir=tmp_path / "adapters" / "a",
                                      base_model="/nowhere/never-loaded"))
    assert not (tmp_path / "adapters").exists()


def test_an_existing_adapter_is_never_overwritten(filled_db, tmp_path):
    out = tmp_path / "adapters" / "taken"
    out.mkdir(parents=True)
    (out / "adapter_config.json").write_text("{}")
    with Store(filled_db, recover=False) as store, pytest.raises(TrainingError, match="not empty"):
        train(store, TrainOptions(out_dir=out, base_model="tiny-random:llava"))
    assert leftovers(out) == ["adapter_config.json"]


@pytest.mark.slow
def test_running_out_of_memory_says_what_to_do_and_leaves_nothing(
    filled_db, tmp_path, monkeypatch
):
    import trl

    def out_of_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    # Out of memory cannot be provoked on purpose on a CPU; the trainer's own step raises it.
    monkeypatch.setattr(trl.SFTTrainer, "training_step", out_of_memory)
    with Store(filled_db, recover=False) as store, pytest.raises(TrainingError,
                                                                 match="Ran out of memory"):
        train(store, TrainOptions(out_dir=tmp_path / "adapters" / "oom", method="sft",
                                  base_model="tiny-random:llava", eval_fraction=0.0))
    assert leftovers(tmp_path / "adapters") == []
