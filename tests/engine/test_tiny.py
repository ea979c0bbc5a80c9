"""Tiny random checkpoints: built once, cached, and loadable like hub checkpoints."""

from __future__ import annotations

import functools
import importlib

import pytest
import torch
from PIL import Image

from engine.families import family_for
from engine.tiny import MARKER, TINY_FAMILIES, TINY_NOTES, ensure_tiny, tiny_path

THINKING = [family for family in TINY_FAMILIES if TINY_NOTES[family].thinking != "never"]
NOT_THINKING = [family for family in TINY_FAMILIES if TINY_NOTES[family].thinking == "never"]
CHAT = [family for family in TINY_FAMILIES if TINY_NOTES[family].chat_template]
QUESTION = "What is in the picture?"


def _image() -> Image.Image:
    """A small non-square gradient, so resizing and patching have real work to do."""
    width, height = 80, 56
    image = Image.new("RGB", (width, height))
    image.putdata(
        [(x * 3 % 256, y * 4 % 256, (x + y) % 256) for y in range(height) for x in range(width)]
    )
    return image


def _messages(image: Image.Image | None) -> list[dict]:
    content = [{"type": "text", "text": QUESTION}]
    if image is not None:
        content.insert(0, {"type": "image", "image": image})
    return [{"role": "user", "content": content}]


@functools.cache
def _load(folder, family):
    """Processor and model of a built folder, loaded once per test session."""
    import transformers
    from transformers import AutoProcessor

    torch.set_num_threads(1)
    loader = family_for(family).loader
    if loader is not None:
        processor, model = _project_loader(loader)(folder)
        return processor, model.eval()
    processor = AutoProcessor.from_pretrained(folder)
    model_class = getattr(transformers, TINY_NOTES[family].model_class)
    return processor, model_class.from_pretrained(folder).eval()


def _project_loader(loader: str):
    """A family this project implements is loaded by its own function, as the engine does."""
    module_name, function_name = loader.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _from_pretrained(folder, family, **kwargs):
    import transformers

    loader = family_for(family).loader
    if loader is not None:
        return _project_loader(loader)(folder, **kwargs)[1]
    return getattr(transformers, TINY_NOTES[family].model_class).from_pretrained(folder, **kwargs)


def _inputs(processor, family, image):
    if TINY_NOTES[family].chat_template:
        return processor.apply_chat_template(
            _messages(image),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
    return processor(images=image, text=f"Question: {QUESTION} Answer:", return_tensors="pt")


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_second_call_reuses_the_folder(tiny_checkpoint, tiny_cache, family):
    folder = tiny_checkpoint(family)
    assert folder == tiny_path(family, tiny_cache)
    assert folder.name.startswith(f"{family}-v")
    marker = folder / MARKER
    weights = folder / "model.safetensors"
    before = (marker.stat().st_mtime_ns, weights.stat().st_mtime_ns)

    assert ensure_tiny(family, tiny_cache) == folder
    assert (marker.stat().st_mtime_ns, weights.stat().st_mtime_ns) == before
    # Nothing left over from staging next to the finished folder.
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_loads_and_generates_eight_tokens(tiny_checkpoint, family):
    note = TINY_NOTES[family]
    processor, model = _load(tiny_checkpoint(family), family)
    assert type(processor).__name__ == note.processor_class
    assert type(model).__name__ == note.model_class
    # Random models emit every id they have. Rows past the tokenizer's end (the real
    # checkpoints pad their vocabularies) must never be the greedy choice.
    rows = model.get_output_embeddings().weight
    assert rows.shape[0] >= len(processor.tokenizer)
    assert not rows[len(processor.tokenizer):].any()

    inputs = _inputs(processor, family, _image())
    image_id = processor.tokenizer.convert_tokens_to_ids(note.image_token)
    assert (inputs["input_ids"] == image_id).sum() > 0

    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    assert new_tokens.shape[0] == 8
    # Control tokens are never the greedy choice, so every new token is visible text.
    assert not set(new_tokens.tolist()) & set(processor.tokenizer.added_tokens_decoder)
    text = processor.decode(new_tokens, skip_special_tokens=True)
    assert isinstance(text, str) and text.strip()
    assert "\ufffd" not in text


@pytest.mark.parametrize("family", CHAT)
def test_conversation_with_history_and_an_image_per_turn_generates(tiny_checkpoint, family):
    processor, model = _load(tiny_checkpoint(family), family)
    small = Image.new("RGB", (40, 90), (10, 200, 10))
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        *_messages(_image()),
        {"role": "assistant", "content": [{"type": "text", "text": "A gradient."}]},
        {
            "role": "user",
            "content": [{"type": "image", "image": small}, {"type": "text", "text": "And?"}],
        },
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert "Be brief." in prompt and "A gradient." in prompt and "And?" in prompt
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 4


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_unquantized_prefixes_name_real_modules(tiny_checkpoint, family):
    _, model = _load(tiny_checkpoint(family), family)
    names = [name for name, _ in model.named_modules()]
    missing = [entry for entry in TINY_NOTES[family].keep_unquantized if not any(
        name == entry or name.startswith(entry + ".") or name.endswith("." + entry)
        for name in names)]
    # The mixture-of-experts gate is in the family's list for Qwen3.5 MoE; the tiny is dense.
    assert set(missing) <= {"shared_expert_gate"}, missing


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_four_bit_text_model_generates_with_the_listed_modules_kept(tiny_checkpoint, family):
    from bitsandbytes.nn import Linear4bit
    from transformers import BitsAndBytesConfig

    note = TINY_NOTES[family]
    folder = tiny_checkpoint(family)
    processor, _ = _load(folder, family)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=torch.float32,
        llm_int8_skip_modules=list(note.keep_unquantized),
    )
    model = _from_pretrained(folder, family, quantization_config=quantization, device_map="cpu")
    quantized = [name for name, module in model.named_modules() if isinstance(module, Linear4bit)]
    assert quantized
    for name in quantized:
        assert not any(name.startswith(entry) or entry in name for entry in note.keep_unquantized)

    inputs = _inputs(processor, family, _image())
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 4


@pytest.mark.parametrize("family", THINKING)
def test_thinking_follows_the_template_of_the_checkpoint(tiny_checkpoint, family):
    note = TINY_NOTES[family]
    processor, _ = _load(tiny_checkpoint(family), family)
    messages = _messages(None)
    on = processor.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=True)
    off = processor.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False)
    default = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert on.endswith("<think>\n")
    if note.thinking == "always":
        assert on == off == default
    else:
        assert off.endswith("<think>\n\n</think>\n\n")
        assert default == (on if note.thinking_default else off)
    assert QUESTION in on and QUESTION in off


# What the real templates do with an earlier answer's reasoning: Qwen3.5 and the Qwen3-VL
# Thinking template drop it; Qwen2.5-VL, Qwen3-VL Instruct and LLaVA keep it verbatim.
REASONING_IN_HISTORY = {"qwen3_5": False, "qwen3_5_large": False, "qwen3_vl_thinking": False,
                        "qwen3_vl": True, "qwen2_5_vl": True, "llava": True}


@pytest.mark.parametrize("family", sorted(REASONING_IN_HISTORY))
def test_earlier_reasoning_in_history_is_kept_or_dropped_as_the_real_template_does(
        tiny_checkpoint, family):
    processor, _ = _load(tiny_checkpoint(family), family)
    # Content as a list of parts, as the engine sends it (the LLaVA template reads only that).
    answer = "<think>\nsecret steps\n</think>\n\nA red car."
    messages = [
        *_messages(None),
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        {"role": "user", "content": [{"type": "text", "text": "And the sky?"}]},
    ]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert "A red car." in prompt
    assert ("secret steps" in prompt) is REASONING_IN_HISTORY[family]


@pytest.mark.parametrize("family", NOT_THINKING)
def test_templates_without_thinking_ignore_the_switch(tiny_checkpoint, family):
    processor, _ = _load(tiny_checkpoint(family), family)
    if not TINY_NOTES[family].chat_template:
        assert processor.chat_template is None
        return
    messages = _messages(None)
    on = processor.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=True)
    off = processor.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=False)
    assert on == off
    assert "<think>" not in on and QUESTION in on


@pytest.mark.parametrize("family", THINKING)
def test_think_tokens_survive_decoding_without_specials(tiny_checkpoint, family):
    processor, _ = _load(tiny_checkpoint(family), family)
    tokenizer = processor.tokenizer
    ids = tokenizer("<think>\nhmm\n</think>\n\nA cat.", add_special_tokens=False).input_ids
    assert tokenizer.convert_tokens_to_ids("<think>") in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>\nhmm\n</think>\n\nA cat."


def test_interrupted_build_is_redone_with_identical_weights(tiny_checkpoint, tmp_path):
    reference = tiny_checkpoint("qwen3_5")
    half_written = tiny_path("qwen3_5", tmp_path)
    half_written.mkdir(parents=True)
    (half_written / "config.json").write_text("{")

    folder = ensure_tiny("qwen3_5", tmp_path)

    assert folder == half_written and (folder / MARKER).is_file()
    assert (folder / "config.json").read_text() != "{"
    rebuilt = (folder / "model.safetensors").read_bytes()
    assert rebuilt == (reference / "model.safetensors").read_bytes()


def test_cache_dir_defaults_to_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VQA_STUDIO_CACHE", str(tmp_path))
    assert tiny_path("llava") == tmp_path / "tiny" / tiny_path("llava", tmp_path).name


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="qwen3_5"):
        ensure_tiny("no-such-family", tmp_path)


# -- built from the real Hub files -------------------------------------------------------

REAL = [family for family in TINY_FAMILIES if TINY_NOTES[family].real_source]
# The template each tiny checkpoint must carry: the real file, or (where no Hub copy was
# found) the rebuilt one in the hub folder's _reconstructed/.
TEMPLATE_SOURCES = {
    "qwen3_5": ("Qwen__Qwen3.5-0.8B", None),
    "qwen3_5_large": (None, "qwen3_5_4b_9b_chat_template.jinja"),
    "qwen3_vl": ("Qwen__Qwen3-VL-4B-Instruct", None),
    "qwen3_vl_thinking": (None, "qwen3_vl_thinking_chat_template.jinja"),
    "qwen2_5_vl": ("Qwen__Qwen2.5-VL-3B-Instruct", None),
    "llava": ("llava-hf__llava-1.5-7b-hf", None),
    "idefics3": ("HuggingFaceTB__SmolVLM-256M-Instruct", None),
    "ovis2": (None, "ovis2_hf_convert_script_template.jinja"),
    "llava_onevision": (None, "llava_onevision_convert_script_template.jinja"),
}


def _real_json(family: str, name: str) -> dict:
    import json

    from engine.tiny.hub import hub_files

    return json.loads((hub_files(TINY_NOTES[family].real_source) / name).read_text())


def _template(family: str) -> str:
    from engine.tiny.hub import real_template, reconstructed_template

    real, rebuilt = TEMPLATE_SOURCES[family]
    return real_template(real) if real else reconstructed_template(rebuilt)


def _history_messages() -> list[dict]:
    return [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        *_messages(_image()),
        {"role": "assistant", "content": [{"type": "text", "text": " A gradient. "}]},
        {"role": "user", "content": [{"type": "image", "image": _image()},
                                     {"type": "text", "text": "And this one?"}]},
    ]


@pytest.mark.parametrize("family", sorted(TEMPLATE_SOURCES))
def test_rendered_prompt_is_the_real_templates(tiny_checkpoint, family):
    processor, _ = _load(tiny_checkpoint(family), family)
    real = _template(family)
    for kwargs in ({}, {"enable_thinking": True}, {"enable_thinking": False}):
        tiny = processor.apply_chat_template(_history_messages(), add_generation_prompt=True,
                                             **kwargs)
        expected = processor.apply_chat_template(_history_messages(), add_generation_prompt=True,
                                                 chat_template=real, **kwargs)
        assert tiny == expected
    assert "And this one?" in tiny


@pytest.mark.parametrize("family", REAL)
def test_config_is_the_real_one_with_only_sizes_shrunk(tiny_checkpoint, family):
    import json

    tiny = json.loads((tiny_checkpoint(family) / "config.json").read_text())
    real = _real_json(family, "config.json")
    assert tiny["model_type"] == real["model_type"]

    def text(config: dict) -> dict:
        return config.get("text_config") or config

    for key in ("vocab_size", "max_position_embeddings", "eos_token_id", "bos_token_id"):
        if key in text(real):
            assert text(tiny)[key] == text(real)[key], key
    for key in ("image_token_id", "image_token_index", "video_token_id",
                "vision_start_token_id", "vision_end_token_id", "num_query_tokens",
                "scale_factor", "vision_feature_layer", "vision_feature_select_strategy"):
        if key in real:
            assert tiny[key] == real[key], key
    for key in ("patch_size", "image_size", "spatial_merge_size", "temporal_patch_size"):
        if key in real.get("vision_config", {}):
            assert tiny["vision_config"][key] == real["vision_config"][key], key
    assert text(tiny)["hidden_size"] < text(real).get("hidden_size", 10**9)


@pytest.mark.parametrize("family", REAL)
def test_special_tokens_and_generation_config_are_the_real_ones(tiny_checkpoint, family):
    from transformers import AutoProcessor, GenerationConfig

    folder = tiny_checkpoint(family)
    tokenizer = AutoProcessor.from_pretrained(folder).tokenizer
    real_tokens = _real_json(family, "tokenizer_config.json")["added_tokens_decoder"]
    for token_id, entry in real_tokens.items():
        assert tokenizer.convert_tokens_to_ids(entry["content"]) == int(token_id), entry
    generation = GenerationConfig.from_pretrained(folder)
    if family.startswith("qwen3_5"):
        from engine.tiny.hub import QWEN3_5_GENERATION as real
    else:
        real = _real_json(family, "generation_config.json")
    for key, value in real.items():
        if key not in ("transformers_version", "_from_model_config"):
            assert getattr(generation, key) == value, key


def test_real_qwen3_5_keeps_the_final_answers_reasoning(tiny_checkpoint):
    # What a --keep-reasoning export relies on: the last answer's reasoning stays in the text.
    processor, _ = _load(tiny_checkpoint("qwen3_5"), "qwen3_5")
    messages = [*_messages(None),
                {"role": "assistant", "content": "<think>\nsecret steps\n</think>\n\nA red car."}]
    text = processor.apply_chat_template(messages, add_generation_prompt=False)
    assert "secret steps" in text and "A red car." in text


def test_a_missing_hub_folder_is_named_in_the_error(monkeypatch, tmp_path):
    monkeypatch.setenv("VQA_STUDIO_HUB", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ensure_tiny("llava", tmp_path)
