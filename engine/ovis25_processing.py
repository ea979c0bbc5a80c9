"""Ovis2.5 inputs: image resizing and patching, prompt building, and loading a published folder.

Images (`Ovis25ImageProcessor`): converted to RGB (alpha dropped), resized with `smart_resize`
to sides that are multiples of 32 within [min_pixels, max_pixels], bilinearly with PIL, scaled
to [-1, 1], and cut into 16x16 patches listed 2x2-block-major (the four patches of one visual
token are consecutive rows): `pixel_values` [patches, 3*16*16] and `image_grid_thw`
[images, 3] = (1, rows, columns) of patches. The bounds default to the published code's:
448x448 to 1344x1792 pixels for the 2B (text width 2048), to 1792x1792 for the others; a
`min_pixels` / `max_pixels` in preprocessor_config.json or in the call wins.

Prompts (`Ovis25Processor`): the checkpoint's own chat template writes `<image>` per image;
each becomes `<|vision_start|>`, one `<|image_pad|>` per visual token, `<|vision_end|>`. Two
faults of that template are worked around before it renders: an assistant message given as a
list of parts renders empty there, so text-only messages are passed as plain strings (an
answer's reasoning cut off as the template would); and it
strips `<image>` / `<video>` from user text in a single pass, so `<ima<image>ge>` would re-form
a placeholder without an image: they are removed repeatedly first.

`load_ovis25(path, **from_pretrained_kwargs)` builds the tokenizer, processor and model from a
folder in the published layout, explicitly: the Auto classes would see its `auto_map` (remote
code, never imported here) or hand back a bare SigLIP processor.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
from transformers import ProcessorMixin, Qwen2Tokenizer
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil
from transformers.processing_utils import ImagesKwargs

from engine.ovis25_config import (
    IMAGE_ATOM_TOKEN,
    IMAGE_END_TOKEN,
    IMAGE_START_TOKEN,
    Ovis25Config,
)

PATCH, MERGE = 16, 2
FACTOR = PATCH * MERGE
MIN_PIXELS = 448 * 448
MAX_PIXELS_2B = 1344 * 1792
MAX_PIXELS = 1792 * 1792
# What the chat template writes for an image or a video; never text a user may type.
PLACEHOLDERS = ("<image>", "<video>")
# The longest side may be this many times the shortest; beyond, the long side is clamped.
MAX_ASPECT = 200


def smart_resize(height: int, width: int, min_pixels: int = MIN_PIXELS,
                 max_pixels: int = MAX_PIXELS, factor: int = FACTOR) -> tuple[int, int]:
    """Sides, multiples of `factor`, closest to the image's within the pixel bounds."""
    if height < factor or width < factor:
        if height < width:
            width, height = round(factor / height * width), factor
        else:
            height, width = round(factor / width * height), factor
    elif max(height, width) / min(height, width) > MAX_ASPECT:
        if height > width:
            height = MAX_ASPECT * width
        else:
            width = MAX_ASPECT * height
    resized_h = round(height / factor) * factor
    resized_w = round(width / factor) * factor
    if resized_h * resized_w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        resized_h = math.floor(height / beta / factor) * factor
        resized_w = math.floor(width / beta / factor) * factor
    elif resized_h * resized_w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        resized_h = math.ceil(height * beta / factor) * factor
        resized_w = math.ceil(width * beta / factor) * factor
    return resized_h, resized_w


class Ovis25ImagesKwargs(ImagesKwargs, total=False):
    min_pixels: int
    max_pixels: int


class Ovis25ImageProcessor(SiglipImageProcessorPil):
    """SigLIP's PIL image processor, per image at its own size, then patched (see module)."""

    valid_kwargs = Ovis25ImagesKwargs
    resample = PILImageResampling.BILINEAR
    image_mean = (0.5, 0.5, 0.5)
    image_std = (0.5, 0.5, 0.5)
    do_convert_rgb = False
    min_pixels = MIN_PIXELS
    max_pixels = MAX_PIXELS
    model_input_names = ["pixel_values", "image_grid_thw"]

    def process_image(self, image, **kwargs):
        # PIL's own conversion, as published: transparency is dropped, not composited.
        if hasattr(image, "mode") and image.mode != "RGB":
            image = image.convert("RGB")
        return super().process_image(image, **kwargs)

    def _preprocess(self, images: list[np.ndarray], resample, do_rescale: bool,
                    rescale_factor: float, do_normalize: bool, image_mean, image_std,
                    min_pixels: int | None = None, max_pixels: int | None = None,
                    return_tensors=None, **kwargs) -> BatchFeature:
        min_pixels = min_pixels or self.min_pixels
        max_pixels = max_pixels or self.max_pixels
        rows, grids = [], []
        for image in images:
            height, width = image.shape[-2:]
            resized_h, resized_w = smart_resize(height, width, min_pixels, max_pixels)
            image = self.resize(image, SizeDict(height=resized_h, width=resized_w),
                                resample=resample)
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            patches, grid = patchify(image.astype(np.float32))
            rows.append(patches)
            grids.append(grid)
        data = {"pixel_values": np.concatenate(rows), "image_grid_thw": np.array(grids)}
        return BatchFeature(data=data, tensor_type=return_tensors)


def patchify(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """[C, H, W] -> rows of C*16*16 values, 2x2-block-major, and the (1, rows, cols) grid."""
    channels, height, width = image.shape
    grid_h, grid_w = height // PATCH, width // PATCH
    blocks = image.reshape(1, 1, channels, grid_h // MERGE, MERGE, PATCH,
                           grid_w // MERGE, MERGE, PATCH)
    # (t, block row, block col, row in block, col in block, C, temporal, y, x)
    blocks = blocks.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return blocks.reshape(grid_h * grid_w, channels * PATCH * PATCH), (1, grid_h, grid_w)


class Ovis25Processor(ProcessorMixin):
    """Tokenizer + image processor + the checkpoint's chat template (see module)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = PLACEHOLDERS[0]
        # The expanded prompt holds no "<image>": nothing to count after tokenizing.
        self.image_token_id = None
        self.atom_token = IMAGE_ATOM_TOKEN
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        t, h, w = (int(v) for v in image_inputs["image_grid_thw"][image_idx])
        atoms = t * h * w // MERGE**2
        return IMAGE_START_TOKEN + IMAGE_ATOM_TOKEN * atoms + IMAGE_END_TOKEN

    def apply_chat_template(self, conversation, *args, **kwargs):
        return super().apply_chat_template(_for_template(conversation), *args, **kwargs)


def _for_template(conversation):
    """The conversation as the published template renders it faithfully (see module)."""
    if not conversation:
        return conversation
    if isinstance(conversation[0], (list, tuple)):
        return [_for_template(chat) for chat in conversation]
    fixed = []
    for message in conversation:
        message = copy.copy(message)
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = without_placeholders(content)
        elif isinstance(content, list):
            parts = [_clean_part(part) for part in content]
            if all(part.get("type") == "text" for part in parts):
                message["content"] = "".join(part.get("text", "") for part in parts)
            else:
                message["content"] = parts
        if message.get("role") == "assistant" and isinstance(message.get("content"), str):
            # The template keeps what follows the reasoning, but a sanitizing marker around a
            # typed "</think>" would defeat its newline stripping: apply the rule here.
            message["content"] = message["content"].split("</think>")[-1].lstrip("\n")
        fixed.append(message)
    return fixed


def _clean_part(part: dict) -> dict:
    if part.get("type") == "text" and isinstance(part.get("text"), str):
        return {**part, "text": without_placeholders(part["text"])}
    return part


def without_placeholders(text: str) -> str:
    """`text` without `<image>` / `<video>`, including ones that removing them forms."""
    changed = True
    while changed:
        changed = False
        for placeholder in PLACEHOLDERS:
            if placeholder in text:
                text = text.replace(placeholder, "")
                changed = True
    return text


def load_processor(path: str | Path, config: Ovis25Config | None = None) -> Ovis25Processor:
    """The processor of a published-layout folder, built without the Auto classes."""
    import json

    path = Path(path)
    config = config or Ovis25Config.from_pretrained(path)
    tokenizer = Qwen2Tokenizer.from_pretrained(path)
    # The template's placeholders, registered in memory as special tokens so that transformers'
    # sanitizing encoder treats a typed one as text. They take spare rows of the embedding
    # table, and never reach the model: the processor replaces every one it writes.
    tokenizer.add_special_tokens({"additional_special_tokens": list(PLACEHOLDERS)},
                                 replace_extra_special_tokens=False)
    settings = {}
    preprocessor = path / "preprocessor_config.json"
    if preprocessor.is_file():
        published = json.loads(preprocessor.read_text())
        settings = {key: published[key] for key in ("min_pixels", "max_pixels")
                    if key in published}
    if "max_pixels" not in settings and config.text_config.hidden_size == 2048:
        settings["max_pixels"] = MAX_PIXELS_2B
    image_processor = Ovis25ImageProcessor(**settings)
    return Ovis25Processor(image_processor, tokenizer, chat_template=tokenizer.chat_template)


def load_ovis25(path: str | Path, **from_pretrained_kwargs):
    """(processor, model) of a folder in the published layout; the keyword arguments go to the
    model's `from_pretrained` (dtype, quantization_config, device_map, ...)."""
    from engine.ovis25_model import Ovis25ForConditionalGeneration, register

    register()
    config = Ovis25Config.from_pretrained(path)
    processor = load_processor(path, config)
    tokenizer = processor.tokenizer
    for field, token in (("image_token_id", IMAGE_ATOM_TOKEN),
                         ("image_start_token_id", IMAGE_START_TOKEN),
                         ("image_end_token_id", IMAGE_END_TOKEN)):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise ValueError(f"The tokenizer has no {token} token, which Ovis2.5 prompts need.")
        written = getattr(config, field)
        if written is not None and written != token_id:
            raise ValueError(f"config.json says {field} is {written}, but the tokenizer gives "
                             f"{token} the id {token_id}.")
        setattr(config, field, token_id)
    model = Ovis25ForConditionalGeneration.from_pretrained(path, config=config,
                                                           **from_pretrained_kwargs)
    return processor, model
