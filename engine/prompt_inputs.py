"""Processor outputs of one prompt: which tensors run along its tokens, and how it grows.

A processor returns `input_ids` plus tensors of the same shape that describe each token
(attention mask, token type ids, multimodal token types) and tensors that describe the images
(pixel values, image sizes, grids). `is_per_token` tells them apart, by shape and by name: an
image tensor is never per token, even when its second dimension happens to equal the prompt's
length. Both decoding paths and scoring extend or pad prompts with this one rule, and pad
`input_ids` with `pad_id`.
"""

from __future__ import annotations


def is_per_token(key: str, value, length: int) -> bool:
    """True when `value` (a processor output named `key`) has one entry per prompt token."""
    import torch

    return (isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[1] == length
            and not key.startswith(("pixel", "image")))


def extend_inputs(inputs, input_ids) -> dict:
    """Processor outputs for a longer prompt that keeps the same images.

    Per-token tensors are extended for the appended text tokens (attention mask with ones,
    the others with zeros); image tensors are reused as they are.
    """
    import torch

    prompt_length = inputs["input_ids"].shape[1]
    added = input_ids.shape[1] - prompt_length
    extended = {}
    for key, value in inputs.items():
        if key == "input_ids":
            extended[key] = input_ids
        elif is_per_token(key, value, prompt_length):
            fill = 1 if key == "attention_mask" else 0
            pad = torch.full((value.shape[0], added), fill, dtype=value.dtype, device=value.device)
            extended[key] = torch.cat([value, pad], dim=1)
        else:
            extended[key] = value
    return extended


def pad_id(tokenizer) -> int:
    """The id that pads prompts: the tokenizer's pad token, else its end-of-sequence token.
    A pad id of 0 is a real id, not a missing one."""
    pad = tokenizer.pad_token_id
    return pad if pad is not None else tokenizer.eos_token_id
