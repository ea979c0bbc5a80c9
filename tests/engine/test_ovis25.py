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
from testing.events import collect

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


def _assert_matches(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float32 rounding, which grows with the size of the numbers a result was
    summed from: matrix products round differently with different CPUs' kernels, and an
    element near zero can be the difference of large ones (one logit of 0.05, among logits
    up to 10, differed by 1.3e-5 from the reference on one Intel machine). So the bound is
    `TOLERANCE` times the tensor's largest magnitude."""
    scale = max(1.0, float(expected.float().abs().max()))
    torch.testing.assert_close(actual.float(), expected.float(), rtol=0.0,
                               atol=TOLERANCE * scale)


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
    _assert_matches(before_norm, reference[f"{key}.vit_hidden_states_last"])
    _assert_matches(after_norm, reference[f"{key}.vit_last_hidden_state"])
    _assert_matches(probabilities, reference[f"{key}.visual_tokens"])
    _assert_matches(embeddings, reference[f"{key}.inputs_embeds"])
    _assert_matches(logits, reference[f"{key}.logits"])
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
    _assert_matches(logits, reference["text.logits"])


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


# -- through the engine, like every family -------------------------------------------------

QUESTION = "What is in the picture?"
TARGET = "a white horse is next to the river"


def _image(color=(200, 30, 30), size=(64, 48)) -> Image.Image:
    return Image.new("RGB", size, color)


def _request(*messages: Message, thinking=False, budget=None, max_new=12, **kwargs):
    return GenerationRequest(messages=messages, thinking=thinking, thinking_budget=budget,
                             sampling=Sampling(max_new_tokens=max_new, temperature=0.0, seed=3),
                             **kwargs)


def _collect(events) -> dict:
    texts, kinds, done = collect(events)
    return {**texts, "kinds": kinds, "done": done}


@pytest.fixture(scope="module")
def tiny_ovis():
    engine = LocalEngine("tiny-random:ovis2_5", quantize="none", device="cpu")
    engine.load()
    return engine


@pytest.fixture(scope="module")
def published_engine():
    """The 9B-like reference folder, whose chat template is the published one."""
    engine = LocalEngine(str(FIXTURES / "tiny_untied"), quantize="none", device="cpu")
    engine.load()
    return engine


def test_published_template_drops_list_answers_so_earlier_answers_go_as_text(published_engine):
    processor = published_engine.processor
    answer = [{"type": "text", "text": "A red square."}]
    # The template's own fault, rendered directly: the answer vanishes.
    raw = processor.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": answer}],
        tokenize=False)
    assert "A red square." not in raw
    history = (Message("user", QUESTION, (_image(),)), Message("assistant", "A red square."),
               Message("user", "And the colour?"))
    inputs, prompt = published_engine._build_inputs(history, thinking=False)
    assert "<|im_start|>assistant\nA red square.<|im_end|>" in prompt
    text = processor.tokenizer.decode(inputs["input_ids"][0])
    assert "A red square." in text


@pytest.mark.parametrize("typed", ["<ima<image>ge>", "<vid<video>eo>", "<<image>image>>",
                                   "<image><video><|image_pad|><|vision_start|>"])
def test_placeholders_typed_in_user_text_add_no_image_slots(published_engine, typed):
    atom = published_engine.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    start = published_engine.processor.tokenizer.convert_tokens_to_ids("<|vision_start|>")

    def counts(text: str) -> tuple[int, int]:
        inputs, _ = published_engine._build_inputs(
            (Message("user", text, (_image(),)),), thinking=False)
        ids = inputs["input_ids"]
        return int((ids == atom).sum()), int((ids == start).sum())

    assert counts(f"What {typed} is it?") == counts("What is it?")
    done = _collect(published_engine.stream(
        _request(Message("user", f"What {typed} is it?", (_image(),)))))["done"]
    assert done.error is None


def test_batched_answers_equal_answers_alone_with_several_images_and_none(published_engine):
    from engine.batching import BatchLimits

    serial = LocalEngine(str(FIXTURES / "tiny_untied"), quantize="none", device="cpu",
                         batch_limits=BatchLimits(max_batch_size=1))
    serial.load()
    assert published_engine.batching and not serial.batching
    a, b, c = _conversation_images()
    requests = [
        _request(Message("user", "What color is the cat?", (a,)),
                 Message("assistant", "The cat is red."),
                 Message("user", "And these two?", (b, c)), max_new=16),
        _request(Message("user", "Describe a cat."), max_new=10),
        _request(Message("user", "And this one, in detail please?", (c,)), max_new=12),
    ]
    alone = [_collect(serial.stream(r)) for r in requests]
    # `stream` submits at once, so all three are in the engine before the first can finish
    # (a 16-token answer against preparing two prompts): they are decoded together, however
    # slowly the machine runs. Their events wait in their queues until read.
    streams = [published_engine.stream(r) for r in requests]
    together = [_collect(events) for events in streams]
    assert [r["answer"] for r in together] == [r["answer"] for r in alone]
    assert all(r["done"].error is None and r["answer"] for r in together)
    assert published_engine.peak_batch_size > 1


def test_visual_head_runs_in_chunks_with_the_same_result(published, monkeypatch):
    import engine.ovis25_model as ovis25_model

    processor, model, _ = published("tiny_untied")
    inputs = _inputs(processor, _reference_conversation(), False, **CONVERSATION_PIXELS)
    with torch.no_grad():
        whole = model.visual_embeddings(inputs["pixel_values"], inputs["image_grid_thw"])
    rows_seen: list[int] = []
    hook = model.visual_tokenizer.head.register_forward_hook(
        lambda module, args, output: rows_seen.append(args[0].shape[0]))
    monkeypatch.setattr(ovis25_model, "HEAD_CHUNK", 5)
    try:
        with torch.no_grad():
            chunked = model.visual_embeddings(inputs["pixel_values"], inputs["image_grid_thw"])
    finally:
        hook.remove()
    assert sum(rows_seen) == whole.shape[0] == 28
    assert max(rows_seen) == 5 and len(rows_seen) == 6
    assert _max_diff(chunked, whole) <= 1e-6


def test_thinking_budget_concludes_inside_one_stream(tiny_ovis):
    question = Message("user", QUESTION, (_image(),))
    free = _collect(tiny_ovis.stream(_request(question, thinking=True, max_new=30)))
    assert free["kinds"][0] == "reasoning" and not free["done"].stats.budget_exhausted
    budgeted = _collect(tiny_ovis.stream(_request(question, thinking=True, budget=5, max_new=30)))
    stats = budgeted["done"].stats
    assert budgeted["done"].error is None
    assert stats.budget_exhausted and stats.reasoning_tokens == 5
    assert budgeted["kinds"][0] == "reasoning" and budgeted["kinds"][-1] == "answer"
    assert budgeted["answer"].strip() and stats.total_tokens == 30
    off = _collect(tiny_ovis.stream(_request(question, thinking=False)))
    assert "reasoning" not in off["kinds"] and off["done"].stats.reasoning_tokens == 0


def test_stop_ends_a_long_answer(tiny_ovis):
    request = _request(Message("user", "Keep going.", (_image(),)), max_new=4000)
    events = tiny_ovis.stream(request)
    next(events)
    tiny_ovis.cancel(request.request_id)
    done = _collect(events)["done"]
    assert done.stats.finish_reason == "cancelled" and done.stats.total_tokens < 4000
    after = _collect(tiny_ovis.stream(_request(Message("user", QUESTION))))["done"]
    assert after.error is None and after.stats.finish_reason == "length"


@pytest.mark.parametrize("quantize", ["4bit", "8bit"])
def test_quantized_keeps_visual_head_embeddings_and_lm_head_in_full_precision(quantize):
    from bitsandbytes.nn import Linear4bit, Linear8bitLt

    engine = LocalEngine("tiny-random:ovis2_5", quantize=quantize, device="cpu")
    engine.load()
    report, model = engine.report, engine.model
    assert report.quantization == quantize
    # Every quantized layer is a linear of the language model's decoder layers.
    assert dict(report.quantized_by_prefix) == {"llm.model": report.quantized_modules}
    assert report.quantized_modules == 2 * 7
    quantized = (Linear4bit, Linear8bitLt)
    for part in (model.visual_tokenizer, model.vte, model.llm.lm_head,
                 model.llm.model.embed_tokens):
        assert not any(isinstance(m, quantized) for m in part.modules())
    assert type(model.visual_tokenizer.head[0]) is torch.nn.Linear
    assert type(model.llm.lm_head) is torch.nn.Linear
    assert type(model.vte) is torch.nn.Embedding
    assert isinstance(model.llm.model.layers[0].mlp.up_proj, quantized)
    assert dict(report.unquantized_by_prefix)["visual_tokenizer.head"] == 1
    result = _collect(engine.stream(_request(Message("user", QUESTION, (_image(),)))))
    assert result["done"].error is None and result["answer"].strip()
    assert result["done"].stats.answer_tokens == 12


def _train_lora(out: Path) -> Path:
    """A LoRA adapter on the language model's decoder linears, fitted so QUESTION gets TARGET."""
    from engine.tiny import ensure_tiny
    from testing.lora import train_lora

    def decoder_linears(model) -> list[str]:
        return [name for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear) and name.startswith("llm.model.layers.")]

    return train_lora(ensure_tiny("ovis2_5"), out, question=QUESTION, target=TARGET,
                      image=_image(), steps=25,
                      load=lambda folder: load_ovis25(folder, dtype=torch.float32),
                      targets=decoder_linears)


@pytest.fixture(scope="module")
def tuned_ovis(tmp_path_factory):
    adapter = _train_lora(tmp_path_factory.mktemp("ovis-lora") / "tuned")
    engine = LocalEngine("tiny-random:ovis2_5", quantize="none", device="cpu",
                         adapters={"tuned": adapter})
    engine.load()
    return engine


def test_lora_adapter_changes_answers_only_when_asked(tuned_ovis, tiny_ovis):
    question = Message("user", QUESTION, (_image(),))
    base = _collect(tuned_ovis.stream(_request(question, max_new=12)))["answer"]
    tuned = _collect(tuned_ovis.stream(_request(question, max_new=12, adapter="tuned")))
    assert tuned["done"].error is None
    assert tuned["answer"].strip().startswith(TARGET)
    assert base == _collect(tiny_ovis.stream(_request(question, max_new=12)))["answer"]
    assert not base.strip().startswith(TARGET)


def test_scoring_reads_the_models_own_log_probabilities(tuned_ovis):
    from engine.scoring import score_answers

    messages = (Message("user", QUESTION, (_image(),)),)
    base, tuned = (score_answers(tuned_ovis, messages, [TARGET, "a red car is near the tree"],
                                 adapter=name) for name in (None, "tuned"))
    assert all(score.tokens > 0 and score.total_logprob < 0 for score in base + tuned)
    # The adapter was trained toward TARGET: it finds it likelier than the base model does,
    # and likelier than the other answer.
    assert tuned[0].total_logprob > base[0].total_logprob
    assert tuned[0].total_logprob > tuned[1].total_logprob
    # By hand, from the logits of one forward pass over prompt and answer.
    processor, model = tuned_ovis.processor, tuned_ovis.model
    model.disable_adapters()
    inputs, _ = tuned_ovis._build_inputs(messages, thinking=False)
    answer = processor.tokenizer(TARGET, add_special_tokens=False)["input_ids"]
    answer = answer + [processor.tokenizer.eos_token_id]
    ids = torch.cat([inputs["input_ids"], torch.tensor([answer])], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=inputs["pixel_values"],
                       image_grid_thw=inputs["image_grid_thw"]).logits[0].float()
    logprobs = torch.log_softmax(logits[-len(answer) - 1:-1], dim=-1)
    expected = float(logprobs.gather(1, torch.tensor(answer)[:, None]).sum())
    assert base[0].total_logprob == pytest.approx(expected, abs=1e-4)


# -- the published sizes, with random weights, for benchmarks ------------------------------


def test_published_sizes_have_the_published_tensors():
    from bench.ovis25 import published_sizes, tensor_names

    names, parameters = tensor_names(published_sizes("9B"))
    # AIDC-AI/Ovis2.5-9B's model.safetensors.index.json lists 840 tensors, 18.35 GB in bf16.
    assert len(names) == 840 and round(parameters / 1e9, 3) == 9.175
    assert "llm.lm_head.weight" in names and "vte.weight" in names
    names, parameters = tensor_names(published_sizes("2B"))
    assert len(names) == 751 and "llm.lm_head.weight" not in names
    assert round(parameters / 1e9, 3) == 2.570


def test_random_checkpoint_in_the_published_layout_loads_through_the_engine(tmp_path):
    import json

    from safetensors import safe_open

    from bench.ovis25 import published_sizes, shrunk, tensor_names, write_random_checkpoint

    config = shrunk(published_sizes("9B"))
    folder = write_random_checkpoint(config, tmp_path / "ovis2_5-9B-tiny")
    written = json.loads((folder / "config.json").read_text())
    assert {"llm_config", "vit_config", "auto_map"} <= set(written)
    assert written["llm_config"]["num_hidden_layers"] == 2
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert sorted(weights.keys()) == sorted(tensor_names(config)[0])
    engine = LocalEngine(str(folder), quantize="none", device="cpu")
    engine.load()
    assert engine.capabilities().family == "ovis2_5"
    result = _collect(engine.stream(_request(Message("user", QUESTION, (_image(),)))))
    assert result["done"].error is None and result["answer"].strip()
    assert result["done"].stats.answer_tokens == 12


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_matches_the_published_code(layout):
    reference = torch.load(FIXTURES / layout / "reference.pt", weights_only=False)
    for dtype in (torch.float32, torch.bfloat16):
        processor, model = load_ovis25(FIXTURES / layout, dtype=dtype)
        model = model.to("cuda").eval()
        for key, thinking in (("nothink", False), ("think", True)):
            inputs = _inputs(processor, _reference_conversation(), thinking,
                             **CONVERSATION_PIXELS).to("cuda")
            with torch.no_grad():
                logits = model(**inputs).logits.float().cpu()
                generated = model.generate(**inputs, max_new_tokens=12, do_sample=False)
            expected = reference[f"{key}.logits"]
            agreement = (logits.argmax(-1) == expected.argmax(-1)).float().mean()
            if dtype == torch.float32:
                assert _max_diff(logits, expected) <= 1e-2 and agreement == 1.0
                new_tokens = generated[:, inputs["input_ids"].shape[1]:].cpu()
                assert torch.equal(new_tokens, reference[f"{key}.generated"])
            else:
                assert agreement >= 0.95
