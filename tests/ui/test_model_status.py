"""The page's model line says what the loaded checkpoint really does: its thinking, as its chat
template has it, and how many images fit, with what one costs."""

from __future__ import annotations

import pytest

from engine.local import LocalEngine
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
