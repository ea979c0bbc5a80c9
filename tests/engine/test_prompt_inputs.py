"""One rule for which processor outputs run along the prompt's tokens, and one pad id."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from engine.prompt_inputs import extend_inputs, is_per_token, pad_id


def test_per_token_tensors_are_told_from_image_tensors():
    assert is_per_token("attention_mask", torch.ones(1, 5), 5)
    assert is_per_token("mm_token_type_ids", torch.zeros(1, 5), 5)
    # Image tensors are never per token, even when a dimension happens to match the prompt.
    assert not is_per_token("image_grid_thw", torch.ones(1, 3), 3)
    assert not is_per_token("pixel_attention_mask", torch.ones(1, 5), 5)
    assert not is_per_token("attention_mask", torch.ones(1, 4), 5)
    assert not is_per_token("attention_mask", [1, 1, 1, 1, 1], 5)


def test_a_longer_prompt_keeps_its_images_and_extends_its_token_tensors():
    inputs = {"input_ids": torch.tensor([[7, 8, 9]]), "attention_mask": torch.ones(1, 3),
              "mm_token_type_ids": torch.tensor([[0, 1, 0]]), "image_sizes": torch.ones(1, 3)}
    longer = torch.tensor([[7, 8, 9, 10, 11]])
    extended = extend_inputs(inputs, longer)
    assert torch.equal(extended["input_ids"], longer)
    assert extended["attention_mask"].tolist() == [[1, 1, 1, 1, 1]]
    assert extended["mm_token_type_ids"].tolist() == [[0, 1, 0, 0, 0]]
    assert extended["image_sizes"] is inputs["image_sizes"]


def test_the_pad_id_is_the_pad_token_even_when_it_is_zero():
    assert pad_id(SimpleNamespace(pad_token_id=0, eos_token_id=2)) == 0
    assert pad_id(SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2
    assert pad_id(SimpleNamespace(pad_token_id=5, eos_token_id=2)) == 5
