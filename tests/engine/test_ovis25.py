"""Ovis2.5 implemented in this project, checked against what the published code computed.

The fixtures (tests/engine/fixtures/ovis2_5, see its README) are tiny checkpoints in the
published folder layout plus `reference.pt`: the published remote code's outputs under
transformers 4.51.3. Here the project's classes load those folders unchanged and must give the
same pixel values, prompt ids, vision states, visual tokens, embeddings, logits and greedy
tokens, with the checkpoint's own code never imported."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.local import LocalEngine
from engine.ovis25_processing import load_ovis25, smart_resize
from engine.types import GenerationRequest, Message, Sampling

FIXTURES = Path(__file__).parent / "fixtures" / "ovis2_5"
LAYOUTS = ["tiny_tied", "tiny_untied"]
# What the published code writes for image placeholders, and the tokens that replace them.
PLACEHOLDER_IDS = {-300: "<|image_pad|>", -301: "<|vision_start|>", -302: "<|vision_end|>"}
CONVERSATION_PIXELS = {"min_pixels": 64 * 64, "max_pixels": 160 * 160}
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def published():
    """(processor, float32 model, reference dict) per fixture folder, loaded once."""
    loaded = {}

    def get(layout: str):
        if layout not in loaded:
            folder = FIXTURES / layout
            processor, model = load_ovis25(folder, dtype=torch.float32)
            reference = torch.load(folder / "reference.pt", weights_only=False)
            loaded[layout] = (processor, model.eval(), reference)
        return loaded[layout]

    return get


def _conversation_images() -> tuple[Image.Image, Image.Image, Image.Image]:
    rng = np.random.default_rng(3)
    a = Image.fromarray(rng.integers(0, 256, (75, 100, 3), dtype=np.uint8))
    b = Image.fromarray(rng.integers(0, 256, (130, 40, 3), dtype=np.uint8)).convert("RGBA")
    c = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))
    return a, b, c


def _reference_conversation() -> list[dict]:
    a, b, c = _conversation_images()
    return [
        {"role": "user", "content": [{"type": "image", "image": a},
                                     {"type": "text", "text": "What color is the cat?"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "<think>\nhmm\n</think>\n\nThe cat is red."}]},
        {"role": "user", "content": [{"type": "image", "image": b}, {"type": "image", "image": c},
                                     {"type": "text", "text": "And these <image> two?"}]},
    ]


def _inputs(processor, conversation, thinking: bool, **pixels):
    """The processor outputs exactly as the engine asks for them."""
    return processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt", processor_kwargs={"return_tensors": "pt", **pixels},
        sanitize_control_tokens=True, enable_thinking=thinking)


def _mapped(processor, reference_ids: torch.Tensor) -> torch.Tensor:
    ids = reference_ids.clone()
    for placeholder, token in PLACEHOLDER_IDS.items():
        ids[ids == placeholder] = processor.tokenizer.convert_tokens_to_ids(token)
    return ids


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a.float() - b.float()).abs().max())


@pytest.mark.parametrize("layout", LAYOUTS)
def test_published_folder_loads_every_weight_by_its_published_name(layout):
    from engine.ovis25_model import Ovis25ForConditionalGeneration

    folder = FIXTURES / layout
    _, info = Ovis25ForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set()
    assert info["mismatched_keys"] == set()
    _, model = load_ovis25(folder)
    tied = (model.llm.lm_head.weight.data_ptr()
            == model.llm.model.embed_tokens.weight.data_ptr())
    assert tied is (layout == "tiny_tied")
    # The vision tower attends with sdpa, not the eager fallback that materialises every
    # image's full attention matrix.
    assert model.visual_tokenizer.vit.config._attn_implementation == "sdpa"
    layer = model.visual_tokenizer.vit.vision_model.encoder.layers[0]
    assert layer.self_attn.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("thinking", [False, True], ids=["nothink", "think"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_conversation_matches_the_published_code(published, layout, thinking):
    processor, model, reference = published(layout)
    key = "think" if thinking else "nothink"
    conversation = _reference_conversation()
    text = processor.apply_chat_template(conversation, add_generation_prompt=True,
                                         enable_thinking=thinking)
    assert text == reference[f"{key}.text"]
    inputs = _inputs(processor, conversation, thinking, **CONVERSATION_PIXELS)
    assert torch.equal(inputs["input_ids"], _mapped(processor, reference[f"{key}.input_ids"]))
    assert torch.equal(inputs["pixel_values"], reference[f"{key}.pixel_values"])
    assert torch.equal(inputs["image_grid_thw"], reference[f"{key}.grid_thws"])

    with torch.no_grad():
        before_norm, after_norm = model.visual_tokenizer.vit(inputs["pixel_values"],
                                                              inputs["image_grid_thw"])
        features = model.visual_tokenizer.features(inputs["pixel_values"],
                                                   inputs["image_grid_thw"])
        probabilities = model.visual_tokenizer.probabilities(features)
        embeddings = model.embed(inputs["input_ids"], inputs["pixel_values"],
                                 inputs["image_grid_thw"])
        logits = model(**inputs).logits
        generated = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert _max_diff(before_norm, reference[f"{key}.vit_hidden_states_last"]) <= TOLERANCE
    assert _max_diff(after_norm, reference[f"{key}.vit_last_hidden_state"]) <= TOLERANCE
    assert _max_diff(probabilities, reference[f"{key}.visual_tokens"]) <= TOLERANCE
    assert _max_diff(embeddings, reference[f"{key}.inputs_embeds"]) <= TOLERANCE
    assert _max_diff(logits, reference[f"{key}.logits"]) <= TOLERANCE
    new_tokens = generated[:, inputs["input_ids"].shape[1]:]
    assert torch.equal(new_tokens, reference[f"{key}.generated"])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_text_only_prompt_matches_the_published_code(published, layout):
    processor, model, reference = published(layout)
    conversation = [{"role": "user", "content": [{"type": "text", "text": "Describe a cat."}]}]
    inputs = _inputs(processor, conversation, thinking=False)
    assert torch.equal(inputs["input_ids"], reference["text.input_ids"])
    assert "pixel_values" not in inputs
    with torch.no_grad():
        logits = model(**inputs).logits
    assert _max_diff(logits, reference["text.logits"]) <= TOLERANCE


def _preprocessing_cases():
    """The nine preprocessing cases of the fixtures, images drawn as the reference drew them."""
    rng = np.random.default_rng(5)
    small, released_2b, released_9b = (64 * 64, 160 * 160), (448 * 448, 1344 * 1792), (
        448 * 448, 1792 * 1792)
    sizes = [((75, 100), small), ((130, 40), small), ((300, 500), small), ((31, 31), small),
             ((10, 700), released_2b), ((1000, 20), released_2b), ((480, 640), released_2b),
             ((3000, 2000), released_9b), ((1024, 1024), released_2b)]
    for (height, width), (low, high) in sizes:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        yield f"pre.{height}x{width}.{low}.{high}", image, low, high


@pytest.mark.parametrize("case", list(range(9)))
def test_image_preprocessing_matches_the_published_code(published, case):
    processor, _, reference = published("tiny_untied")
    key, image, low, high = list(_preprocessing_cases())[case]
    if f"{key}.image" in reference:
        assert np.array_equal(reference[f"{key}.image"].numpy(), image)
    else:
        assert list(reference[f"{key}.image_shape"]) == list(image.shape)
    assert list(smart_resize(image.shape[0], image.shape[1], low, high)) == \
        reference[f"{key}.resized"].tolist()
    out = processor.image_processor(Image.fromarray(image), min_pixels=low, max_pixels=high,
                                    return_tensors="pt")
    assert torch.equal(out["image_grid_thw"], reference[f"{key}.grid_thw"])
    pixels = out["pixel_values"]
    if f"{key}.pixel_values" in reference:
        assert torch.equal(pixels, reference[f"{key}.pixel_values"])
        return
    assert list(pixels.shape) == reference[f"{key}.pixel_values_shape"].tolist()
    assert torch.equal(pixels[:16], reference[f"{key}.pixel_values_head"])
    assert float(pixels.double().sum()) == pytest.approx(
        float(reference[f"{key}.pixel_values_sum"]), rel=1e-12, abs=1e-9)
    assert float(pixels.double().abs().sum()) == pytest.approx(
        float(reference[f"{key}.pixel_values_abs_sum"]), rel=1e-12, abs=1e-9)


def test_bfloat16_matches_the_published_code_in_bfloat16():
    folder = FIXTURES / "tiny_untied"
    processor, model = load_ovis25(folder, dtype=torch.bfloat16)
    reference = torch.load(folder / "reference_bf16.pt", weights_only=False)
    inputs = _inputs(processor, _reference_conversation(), False, **CONVERSATION_PIXELS)
    with torch.no_grad():
        logits = model.eval()(**inputs).logits
        features = model.visual_tokenizer.features(inputs["pixel_values"],
                                                   inputs["image_grid_thw"])
        probabilities = model.visual_tokenizer.probabilities(features)
    # Equal on the machine these were written on; one bfloat16 step (0.125 at logits of
    # 16-32) of slack for other CPUs' kernels.
    assert torch.equal(logits.float().argmax(-1), reference["logits"].float().argmax(-1))
    assert _max_diff(logits, reference["logits"]) <= 0.25
    assert _max_diff(probabilities, reference["vt"]) <= 1e-2


def test_checkpoint_code_is_never_imported(tmp_path):
    # The published folder with its remote-code files present, each failing on import: the
    # engine must load and answer without touching them.
    folder = tmp_path / "published"
    shutil.copytree(FIXTURES / "tiny_untied", folder)
    for module in ("configuration_ovis2_5.py", "modeling_ovis2_5.py"):
        (folder / module).write_text("raise RuntimeError('the checkpoint code was imported')\n")
    engine = LocalEngine(str(folder), quantize="none", device="cpu")
    engine.load()
    assert engine.capabilities().family == "ovis2_5"
    image = Image.new("RGB", (64, 48), (10, 120, 200))
    events = list(engine.stream(GenerationRequest(
        messages=(Message("user", "What is it?", (image,)),),
        sampling=Sampling(max_new_tokens=6, temperature=0.0, seed=1))))
    assert events[-1].error is None and events[-1].stats.total_tokens == 6
    assert not [name for name in sys.modules if "transformers_modules" in name]
    assert not [name for name in sys.modules if name.endswith("ovis2_5")]
