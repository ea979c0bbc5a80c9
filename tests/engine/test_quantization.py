"""bitsandbytes 4-bit and 8-bit through the real loading path: what is quantized, what is kept,
how much memory it takes, and that the quantized model still answers."""

from __future__ import annotations

import pytest
import torch
from bitsandbytes.nn import Linear4bit, Linear8bitLt
from PIL import Image

from engine.families import family_for
from engine.loading import resolve_quantization
from engine.local import LocalEngine
from engine.types import GenerationRequest, Message, Sampling

BNB_LAYERS = (Linear4bit, Linear8bitLt)


def _load(ref: str, quantize: str, device: str = "cpu") -> LocalEngine:
    engine = LocalEngine(ref, quantize=quantize, device=device)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def qwen_4bit():
    return _load("tiny-random", "4bit")


@pytest.fixture(scope="module")
def qwen_8bit():
    return _load("tiny-random", "8bit")


@pytest.fixture(scope="module")
def llava_4bit():
    return _load("tiny-random:llava", "4bit")


def _answer(engine: LocalEngine) -> tuple[str, object]:
    request = GenerationRequest(
        messages=(Message("user", "What is in the picture?", (Image.new("RGB", (64, 48)),)),),
        sampling=Sampling(max_new_tokens=12, temperature=0.0, seed=5))
    events = list(engine.stream(request))
    return "".join(e.text for e in events if e.kind == "answer"), events[-1]


def _kept_modules(model, entry: str) -> list[tuple[str, torch.nn.Module]]:
    """Modules an unquantized-list entry names: a path prefix or a path suffix."""
    return [(name, module) for name, module in model.named_modules()
            if name == entry or name.startswith(entry + ".") or name.endswith("." + entry)]


@pytest.mark.parametrize("fixture, quantization", [("qwen_4bit", "4bit"), ("qwen_8bit", "8bit"),
                                                   ("llava_4bit", "4bit")])
def test_report_says_what_was_quantized_and_kept(request, fixture, quantization):
    engine = request.getfixturevalue(fixture)
    report = engine.report
    family = family_for(engine.model.config.model_type)
    assert report.quantization == quantization
    assert engine.capabilities().quantization == quantization
    assert report.kept_unquantized == family.keep_unquantized
    assert report.quantized_modules > 0
    # Every quantized layer belongs to the text model; the counts add up.
    assert dict(report.quantized_by_prefix) == {"model.language_model": report.quantized_modules}
    kept = dict(report.unquantized_by_prefix)
    assert kept["lm_head"] == 1
    vision = family.keep_unquantized[0]
    assert kept[vision] > 0
    line = report.summary()
    assert quantization in line and f"{report.quantized_modules} linear layers quantized" in line


@pytest.mark.parametrize("fixture", ["qwen_4bit", "qwen_8bit", "llava_4bit"])
def test_kept_modules_are_plain_while_text_linears_are_quantized(request, fixture):
    model = request.getfixturevalue(fixture).model
    family = family_for(model.config.model_type)
    matched = 0
    for entry in family.keep_unquantized:
        for name, module in _kept_modules(model, entry):
            matched += 1
            inside = [n for n, m in module.named_modules() if isinstance(m, BNB_LAYERS)]
            assert not inside, f"{name} holds quantized layers {inside}"
    assert matched > 0
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)
    text_mlp = model.model.language_model.layers[0].mlp
    assert isinstance(text_mlp.up_proj, BNB_LAYERS)


def test_quantized_models_take_less_memory(tiny_engine, qwen_4bit, qwen_8bit):
    full = tiny_engine.report.footprint_bytes
    assert 0 < qwen_4bit.report.footprint_bytes < qwen_8bit.report.footprint_bytes < full


@pytest.mark.parametrize("fixture", ["qwen_4bit", "qwen_8bit", "llava_4bit"])
def test_quantized_model_streams_an_answer(request, fixture):
    text, done = _answer(request.getfixturevalue(fixture))
    assert done.error is None
    assert done.stats.answer_tokens == 12
    assert text.strip()


def test_auto_is_4bit_on_cuda_and_none_on_cpu():
    assert resolve_quantization("auto", "cuda") == "4bit"
    assert resolve_quantization("auto", "cpu") == "none"
    for explicit in ("4bit", "8bit", "none"):
        assert resolve_quantization(explicit, "cpu") == explicit
    engine = _load("tiny-random", "auto", device="cpu")
    assert engine.report.quantization == "none"
    assert engine.report.quantized_modules == 0
    assert not any(isinstance(m, BNB_LAYERS) for m in engine.model.modules())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_on_cuda_is_nf4_with_double_quantization_and_bf16_compute():
    engine = _load("tiny-random", "auto", device="cuda")
    config = engine.model.config.quantization_config
    assert engine.report.quantization == "4bit"
    assert config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant is True
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    assert engine.report.cuda_peak_bytes and engine.report.cuda_peak_bytes > 0
    text, done = _answer(engine)
    assert done.error is None and text.strip()
