"""`--model` and `--adapter` take what trainers write, not only hand-made folders.

A real LoRA adapter is trained on the tiny LLaVA checkpoint; the folders around it are the
shapes PEFT, TRL, the Hugging Face Trainer, ms-swift and LLaMA-Factory leave behind (the
Trainer's own checkpoints are written by a real Trainer run). Each must load through the
engine's real loading path and give the adapter's answer; a DeepSpeed ZeRO checkpoint without
consolidated weights must be refused with the command that consolidates it.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from PIL import Image

from engine.errors import ModelLoadError
from engine.local import LocalEngine
from engine.scoring import score_answers
from engine.types import Message
from testing.lora import prompt_inputs, train_lora

QUESTION = "What is in the picture?"
TARGET = "a white horse is next to the river"
OTHER = "two birds"


def _messages() -> tuple[Message, ...]:
    return (Message("user", QUESTION, (Image.new("RGB", (48, 40), (30, 160, 200)),)),)


@pytest.fixture(scope="module")
def base(tiny_checkpoint):
    return tiny_checkpoint("llava")


@pytest.fixture(scope="module")
def adapter(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("peft") / "adapter"
    image = _messages()[0].images[0]
    return train_lora(base, out, question=QUESTION, target=TARGET, image=image, steps=25)


def _margin(engine: LocalEngine, adapter_name: str | None = None) -> float:
    """How much more likely the adapter's target is than another answer."""
    target, other = score_answers(engine, _messages(), [TARGET, OTHER], adapter_name)
    return target.total_logprob - other.total_logprob


def _load(model: str, **adapters) -> LocalEngine:
    engine = LocalEngine(model, quantize="none", device="cpu",
                         adapters={k: str(v) for k, v in adapters.items()})
    engine.load()
    return engine


@pytest.fixture(scope="module")
def expected_margin(base, adapter) -> float:
    engine = _load(str(base), tuned=adapter)
    margin = _margin(engine, "tuned")
    assert margin > _margin(engine, None) + 1.0  # the adapter really moved the model
    return margin


def test_a_peft_adapter_folder_as_model_is_merged_into_the_base_it_names(
    adapter, expected_margin
):
    engine = _load(str(adapter))
    assert _margin(engine) == pytest.approx(expected_margin, abs=1e-3)
    assert any("merged into its base model" in note for note in engine.report.notes)


def test_a_merged_model_folder_loads_as_a_model(base, adapter, expected_margin, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    merged = tmp_path / "merged"
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().save_pretrained(merged)
    AutoProcessor.from_pretrained(base).save_pretrained(merged)
    assert _margin(_load(str(merged))) == pytest.approx(expected_margin, abs=1e-3)


class _OneExample(torch.utils.data.Dataset):
    def __init__(self, processor) -> None:
        inputs = prompt_inputs(processor, QUESTION, _messages()[0].images[0])
        self.item = {key: value[0] for key, value in inputs.items()}
        self.item["labels"] = self.item["input_ids"].clone()

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        return self.item


@pytest.fixture(scope="module")
def trainer_run(base, tmp_path_factory):
    """A real Trainer run (full fine-tune) that saved checkpoint-1 and checkpoint-2."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, Trainer, TrainingArguments

    out = tmp_path_factory.mktemp("trainer") / "run"
    processor = AutoProcessor.from_pretrained(base)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.float32)
    args = TrainingArguments(output_dir=str(out), max_steps=2, save_steps=1, learning_rate=1e-2,
                             per_device_train_batch_size=1, use_cpu=True, report_to="none",
                             disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=_OneExample(processor),
                      processing_class=processor)
    trainer.train()
    assert (out / "checkpoint-2" / "optimizer.pt").is_file()
    return out


def _embeddings(folder) -> torch.Tensor:
    """The input embeddings as saved in a folder (the file's names are not the modules')."""
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    (name,) = [key for key in saved if key.endswith("embed_tokens.weight")]
    return saved[name]


def test_a_trainer_checkpoint_loads_its_weights_and_ignores_the_training_state(trainer_run):
    engine = _load(str(trainer_run / "checkpoint-1"))
    assert any("training state" in note and "optimizer.pt" in note
               for note in engine.report.notes)
    loaded = engine.model.get_input_embeddings().weight
    assert torch.equal(loaded, _embeddings(trainer_run / "checkpoint-1"))
    assert not torch.equal(loaded, _embeddings(trainer_run / "checkpoint-2"))


def test_a_trainer_output_folder_loads_its_latest_checkpoint(trainer_run):
    engine = _load(str(trainer_run))
    assert any("checkpoint-2" in note for note in engine.report.notes)
    loaded = engine.model.get_input_embeddings().weight
    assert torch.equal(loaded, _embeddings(trainer_run / "checkpoint-2"))


def _copy_adapter(adapter, folder) -> None:
    folder.mkdir(parents=True)
    for item in adapter.iterdir():
        shutil.copy(item, folder / item.name)


def test_trl_and_llamafactory_output_folders_load_as_adapters(
    base, adapter, expected_margin, tmp_path
):
    # Both save the final adapter at the top of output_dir, beside their checkpoint-N folders.
    out = tmp_path / "output"
    _copy_adapter(adapter, out)
    (out / "trainer_log.jsonl").write_text('{"current_steps": 2, "loss": 1.0}\n')
    _copy_adapter(adapter, out / "checkpoint-2")
    (out / "checkpoint-2" / "optimizer.pt").write_bytes(b"")
    engine = _load(str(base), tuned=out)
    assert _margin(engine, "tuned") == pytest.approx(expected_margin, abs=1e-3)


def test_an_ms_swift_output_folder_loads_the_latest_runs_latest_checkpoint(
    base, adapter, expected_margin, tmp_path
):
    output = tmp_path / "output"
    # An older run holds a different (empty, unusable) adapter: it must not be chosen.
    old = output / "v0-20261129-100000" / "checkpoint-9"
    old.mkdir(parents=True)
    (old / "adapter_config.json").write_text("{}")
    latest = output / "v1-20261130-090000"
    _copy_adapter(adapter, latest / "checkpoint-2")
    _copy_adapter(adapter, latest / "checkpoint-4")
    (latest / "checkpoint-4" / "args.json").write_text('{"tuner_type": "lora"}')
    (latest / "checkpoint-2" / "adapter_model.safetensors").unlink()
    engine = _load(str(base), tuned=output)
    assert _margin(engine, "tuned") == pytest.approx(expected_margin, abs=1e-3)
    with pytest.raises(ModelLoadError, match="is a whole model, not a LoRA adapter"):
        _load(str(base), tuned=base)


def test_a_zero_checkpoint_without_weights_is_refused_with_the_consolidation_command(
    base, tmp_path
):
    folder = tmp_path / "run" / "checkpoint-4"
    (folder / "global_step4").mkdir(parents=True)
    for rank in (0, 1):
        (folder / "global_step4" / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt") \
            .write_bytes(b"")
    (folder / "latest").write_text("global_step4")
    (folder / "zero_to_fp32.py").write_text(
        "# python zero_to_fp32.py . output_dir/ --safe_serialization\n"
        "parser.add_argument('--safe_serialization')\n")
    shutil.copy(base / "config.json", folder / "config.json")
    command = f"cd {folder} && python zero_to_fp32.py . . --safe_serialization"
    for model in (folder, folder.parent):
        with pytest.raises(ModelLoadError) as error:
            _load(str(model))
        assert "DeepSpeed ZeRO checkpoint (global_step4)" in str(error.value)
        assert command in str(error.value)
    # A copy of the script from before DeepSpeed 0.14 takes an output file instead.
    (folder / "zero_to_fp32.py").write_text("# python zero_to_fp32.py . pytorch_model.bin\n")
    with pytest.raises(ModelLoadError, match="zero_to_fp32.py . pytorch_model.bin"):
        _load(str(base), tuned=folder)
