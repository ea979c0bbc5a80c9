"""Tiny random BLIP-2 checkpoint: ViT + Q-Former + OPT, no chat template.

`build_blip2` writes a complete checkpoint into an empty folder with `save_pretrained`; called
only by `engine.tiny.ensure_tiny`, which owns caching. BLIP-2 takes a plain prompt
("Question: ... Answer:"); the processor puts one <image> per query token before it.
`generate` hands over to the OPT language model, which reads its own generation settings
from the text config, so those carry the eos and pad ids.
"""

from __future__ import annotations

from pathlib import Path

from engine.tiny_common import (
    VOCAB_SIZE,
    add_think_tokens,
    save_checkpoint,
    seed_everything,
    train_byte_level_bpe,
)

IMAGE_SIZE, PATCH, QUERY_TOKENS = 32, 8, 8


def _opt_tokenizer():
    """GPT-2 byte-level BPE with OPT's specials: </s> both starts and ends a text."""
    from transformers import GPT2Tokenizer

    vocab, merges = train_byte_level_bpe(VOCAB_SIZE, ["<s>", "<pad>", "</s>", "<unk>"])
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        bos_token="</s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        add_bos_token=True,
    )
    add_think_tokens(tokenizer)
    return tokenizer


def build_blip2(folder: Path) -> None:
    """Blip2ForConditionalGeneration: 2-layer ViT, 2-layer Q-Former (8 queries), 2-layer OPT."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
    )

    tokenizer = _opt_tokenizer()
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    # The processor adds <image> to the tokenizer itself; the vocabulary size is read after.
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=QUERY_TOKENS)
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH,
    }
    qformer_config = {
        "vocab_size": 64,  # token embeddings unused: no Q-Former text input
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "encoder_hidden_size": 32,
    }
    text_config = {
        "model_type": "opt",
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "word_embed_proj_dim": 64,
        "ffn_dim": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 512,
        # The real ones tie, but a random tied model mostly repeats its last input token.
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = Blip2Config(
        vision_config=vision_config,
        qformer_config=qformer_config,
        text_config=text_config,
        num_query_tokens=QUERY_TOKENS,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    seed_everything()
    model = Blip2ForConditionalGeneration(config).eval()
    save_checkpoint(folder, model, processor, tokenizer, [tokenizer.eos_token])
