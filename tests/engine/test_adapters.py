"""LoRA adapters in the local engine: a real adapter, trained here on the tiny Qwen3.5
checkpoint, changes answers only when a request asks for it."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from engine.errors import ModelLoadError, RequestError
from engine.local import LocalEngine
from engine.tiny import ensure_tiny
from engine.types import GenerationRequest, Message, Sampling
from testing.lora import train_lora

QUESTION = "What is in the picture?"
TARGET = "a white horse is next to the river"


def _image() -> Image.Image:
    return Image.new("RGB", (64, 48), (200, 30, 30))


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "tuned"
    return train_lora(ensure_tiny("qwen3_5"), out, question=QUESTION, target=TARGET,
                      image=_image(), steps=25)


def _engine(adapter_dir, quantize="none") -> LocalEngine:
    engine = LocalEngine("tiny-random", quantize=quantize, device="cpu",
                         adapters={"tuned": adapter_dir})
    engine.load()
    return engine


@pytest.fixture(scope="module")
def tuned_engine(adapter_dir):
    return _engine(adapter_dir)


def _answer(engine: LocalEngine, adapter: str | None, max_new: int = 12) -> str:
    request = GenerationRequest(messages=(Message("user", QUESTION, (_image(),)),),
                                adapter=adapter,
                                sampling=Sampling(max_new_tokens=max_new, temperature=0.0, seed=9))
    events = list(engine.stream(request))
    assert events[-1].error is None
    return "".join(e.text for e in events if e.kind == "answer")


def test_adapters_are_listed(tuned_engine):
    assert tuned_engine.capabilities().adapters == ("tuned",)
    assert tuned_engine.report.adapters == ("tuned",)
    assert "adapters tuned" in tuned_engine.report.summary()


def test_the_adapter_moves_the_answer_to_what_it_was_trained_on(tuned_engine):
    base = _answer(tuned_engine, None)
    tuned = _answer(tuned_engine, "tuned")
    assert base != tuned
    assert tuned.strip().startswith(TARGET)
    assert not base.strip().startswith(TARGET)


def test_base_answers_are_unchanged_by_loading_an_adapter(tiny_engine, tuned_engine):
    expected = _answer(tiny_engine, None)
    assert _answer(tuned_engine, None) == expected
    # Switching to the adapter and back leaves the base model as it was.
    _answer(tuned_engine, "tuned")
    assert _answer(tuned_engine, None) == expected


def test_unknown_adapter_is_refused(tuned_engine, tiny_engine):
    request = GenerationRequest(messages=(Message("user", QUESTION),), adapter="missing")
    with pytest.raises(RequestError, match="No adapter named 'missing' is loaded.*tuned"):
        tuned_engine.stream(request)
    with pytest.raises(RequestError, match="loaded: none"):
        tiny_engine.stream(request)


def test_an_adapter_works_on_a_4bit_base(adapter_dir):
    engine = _engine(adapter_dir, quantize="4bit")
    assert engine.report.quantized_modules > 0
    assert _answer(engine, "tuned").strip().startswith(TARGET)
    assert not _answer(engine, None).strip().startswith(TARGET)


def test_adapter_for_another_model_fails_to_load_with_a_message(adapter_dir):
    engine = LocalEngine("tiny-random:llava", quantize="none", device="cpu",
                         adapters={"tuned": adapter_dir})
    with pytest.raises(ModelLoadError, match="It was trained on "):
        engine.load()
    assert "tuned" in engine.load_error
    # Which base it needs, from the adapter's own config.
    trained_on = json.loads((adapter_dir / "adapter_config.json").read_text())[
        "base_model_name_or_path"]
    assert f"--model {trained_on}" in engine.load_error


def test_missing_adapter_folder_or_bad_name_fails_to_load(tmp_path, adapter_dir):
    with pytest.raises(ModelLoadError, match="No LoRA adapter for 'tuned'"):
        _engine(tmp_path)
    engine = LocalEngine("tiny-random", quantize="none", device="cpu",
                         adapters={"no spaces": adapter_dir})
    with pytest.raises(ModelLoadError, match="is not usable"):
        engine.load()


def test_helper_wrote_a_lora_adapter_for_the_text_model(adapter_dir):
    from safetensors import safe_open

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    with safe_open(adapter_dir / "adapter_model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert names and all(".language_model." in name and ".lora_" in name for name in names)


def test_requests_for_base_and_adapter_at_once_each_get_their_own_answer(tuned_engine):
    import threading

    alone = {name: _answer(tuned_engine, name, max_new=20) for name in (None, "tuned")}
    asked = [None, "tuned", None, "tuned"]
    answers: list = [None] * len(asked)

    def ask(index: int) -> None:
        answers[index] = _answer(tuned_engine, asked[index], max_new=20)

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(len(asked))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # One adapter per batch: the others wait for it to drain, and nobody gets the wrong one.
    assert answers == [alone[name] for name in asked]
    assert alone[None] != alone["tuned"]


@pytest.mark.parametrize("name", ["a", "mlp", "proj"])
def test_an_adapter_named_like_part_of_a_layer_loads_and_answers(adapter_dir, name):
    # Names that occur inside the base model's weight names ("a" in nearly all of them).
    engine = LocalEngine("tiny-random", quantize="none", device="cpu",
                         adapters={name: adapter_dir})
    engine.load()
    assert engine.capabilities().adapters == (name,)
    assert _answer(engine, name).strip().startswith(TARGET)
    engine.close()
