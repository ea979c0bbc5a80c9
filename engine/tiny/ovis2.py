"""Tiny random Ovis2 checkpoint (the native `ovis2` architecture of transformers).

`build_ovis2` writes a complete checkpoint into an empty folder with `save_pretrained`; called
only by `engine.tiny.ensure_tiny`, which owns caching. Ovis2 maps image patches onto a visual
vocabulary whose embeddings fill the <IMG_ATOM> positions; five indicator tokens frame the
tiles. The template (as transformers' conversion script writes it, read from the real hub
files' folder) writes a literal <image> that the processor expands into that layout.
"""

from __future__ import annotations

from pathlib import Path

from engine.tiny.common import (
    decoder_config,
    qwen_style_tokenizer,
    save_checkpoint,
    seed_everything,
)
from engine.tiny.hub import OVIS2_TEMPLATE, reconstructed_template
from engine.tiny.sizes import VISION_SIZES

IMAGE_ATOM = "<IMG_ATOM>"
# Order matters: the model fills these positions with indicator embeddings 0..4.
INDICATOR_TOKENS = ["<IMG_START>", "<IMG_GRID>", "<IMG_COL>", "<IMG_ROW>", "<IMG_END>"]
TILE, PATCH, STRIDE = 64, 16, 2

def build_ovis2(folder: Path) -> None:
    """Ovis2ForConditionalGeneration: 2-layer ViT with a 64-entry visual vocabulary + Qwen2."""
    from transformers import (
        Ovis2Config,
        Ovis2ForConditionalGeneration,
        Ovis2ImageProcessor,
        Ovis2Processor,
        Qwen2Tokenizer,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    specials = ["<image>", IMAGE_ATOM, *INDICATOR_TOKENS]
    # The template transformers' conversion script writes: a default system turn always.
    template = reconstructed_template(OVIS2_TEMPLATE)
    tokenizer = qwen_style_tokenizer(Qwen2Tokenizer, PRETOKENIZE_REGEX, specials, template)
    tokens_per_tile = (TILE // PATCH // STRIDE) ** 2
    image_processor = Ovis2ImageProcessor(
        size={"height": TILE, "width": TILE}, crop_to_patches=True, min_patches=1, max_patches=4
    )
    processor = Ovis2Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=template,
        image_seq_length=tokens_per_tile,
    )
    text_config = decoder_config("qwen2", tokenizer)
    vision_config = {
        **VISION_SIZES,
        "image_size": TILE,
        "patch_size": PATCH,
        "hidden_stride": STRIDE,
        "vocab_size": 64,
        "num_visual_indicator_tokens": len(INDICATOR_TOKENS),
    }
    config = Ovis2Config(
        vision_config=vision_config,
        text_config=text_config,
        # The top level repeats the text sizes: the model reads them from here.
        vocab_size=text_config["vocab_size"],
        hidden_size=text_config["hidden_size"],
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_ATOM),
        visual_indicator_token_ids=tokenizer.convert_tokens_to_ids(INDICATOR_TOKENS),
        # The real ones tie, but a random tied model mostly repeats its last input token.
        tie_word_embeddings=False,
    )
    seed_everything()
    model = Ovis2ForConditionalGeneration(config).eval()
    save_checkpoint(folder, model, processor, tokenizer, ["<|im_end|>", "<|endoftext|>"])
