"""The page's model line says what the loaded checkpoint really does: its thinking, as its chat
template has it, and how many images fit, with what one costs; and the tests' rule for "the
model is loaded" (`testing.app.loaded_status`) reads the lines the app really writes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.errors import ModelLoadError
from engine.loading import LoadProgress
from engine.local import LocalEngine
from testing.app import loaded_status
from ui.model_status import status_text as _status_text


@pytest.mark.parametrize(("name", "thinking"), [
    ("tiny-random", "thinks when asked"),
    ("tiny-random:qwen3_5_large", "thinks unless told not to"),
    ("tiny-random:qwen3_vl_thinking", "always thinks"),
    ("tiny-random:qwen3_vl", "no thinking"),
])
def test_status_names_the_templates_thinking(name, thinking):
    engine = LocalEngine(name, quantize="none", device="cpu")
    engine.load()
    assert f" · {thinking} · " in _status_text(engine)


def test_status_shows_the_image_limit_and_cost(llava_engine):
    caps = llava_engine.capabilities()
    text = _status_text(llava_engine)
    assert f"up to {caps.max_images} images (about {caps.image_tokens} tokens each)" in text
    assert caps.max_images == 6


def _not_ready(progress: str = "", load_error: str | None = None):
    return SimpleNamespace(ready=False, load_error=load_error, model_ref="tiny-random",
                           progress=LoadProgress("building", progress))


@pytest.mark.parametrize("family", [None, "qwen3_5"])
def test_the_loaded_rule_takes_only_a_loaded_models_line(tiny_engine, family):
    loaded = _status_text(tiny_engine)
    # Still loading, the line names the family too: it must not count as loaded.
    loading = _status_text(_not_ready("Preparing the tiny random qwen3_5 checkpoint · qwen3_5 · "))
    failed = _status_text(_not_ready(load_error="no weights · qwen3_5 · here"))
    rule = loaded_status(family)
    for text, says_loaded in [(loaded, True), (loading, False), (failed, False)]:
        # As /poll returns it (Markdown) and as the page shows it (no bold markers).
        assert bool(rule.search(text)) is says_loaded, text
        assert bool(rule.search(text.replace("**", ""))) is says_loaded, text
    assert not loaded_status("llava").search(loaded)


def test_an_adapter_that_fails_is_named_and_no_other_model_is_proposed(tmp_path):
    """The adapter was the trouble, not the model: the line says which and where, and the
    way on is to fix it and start again, not to pick other weights."""
    engine = LocalEngine("tiny-random", quantize="none", device="cpu",
                         adapters={"tuned": tmp_path / "missing"})
    with pytest.raises(ModelLoadError):
        engine.load()
    text = _status_text(engine)
    assert "No LoRA adapter for 'tuned'" in text and "start the app again" in text
    assert "local weights" not in text
