"""Shared parts of the tiny random checkpoints: corpus, tokenizer training, weight touch-ups.

`engine.tiny` builds the checkpoints; the per-family builders in `engine.tiny.*` use these
helpers so that every family gets the same kind of byte-level BPE vocabulary, trained offline on
a small generated English corpus, and the same seeded weights. Nothing here downloads anything.
Heavy imports (torch, tokenizers, transformers) happen inside the functions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.tiny.sizes import TEXT_SIZES

if TYPE_CHECKING:
    import torch

SEED = 1234
VOCAB_SIZE = 640  # trained entries; special tokens come on top
THINK_TOKENS = ("<think>", "</think>")


def _phrases(text: str) -> list[str]:
    """Split a "|"-separated list of phrases written across lines."""
    return [phrase.strip() for phrase in text.split("|")]


_SUBJECTS = _phrases(
    """\
the cat | a dog | the red car | two birds | an old man | the little girl | a bicycle |
the blue house | three apples | a wooden table | the traffic light | a green bottle |
the kitchen | a yellow bus | the mountain | some flowers | a laptop | the river |
a plate of food | the street sign | a white horse | the window | a small boat | the chart |
a handwritten note | the receipt | a soccer ball | the bridge
"""
)
_VERBS = _phrases(
    """\
is sitting on | is next to | stands in front of | is behind | is parked near | looks at |
is lying under | is placed beside | is painted like | is reflected in | is hidden by |
is larger than | is smaller than | points toward | covers
"""
)
_OBJECTS = _phrases(
    """\
the sofa | a tree | the road | a wall | the table | the water | a building | the sky |
a fence | the grass | a window | the floor | a shelf | the door | a pile of books |
the beach | a parking lot | the garden | a desk | the snow
"""
)
_QUESTIONS = _phrases(
    """\
What color is {s}? | How many objects are in the picture? | Where is {s}? |
Is {s} {v} {o}? | What is written on {o}? | Describe the image in detail. |
Which object is closest to the camera? | What time of day does it look like? |
Can you read the text in the image? | Why is {s} {v} {o}?
"""
)
_THOUGHTS = _phrases(
    """\
Let me look at the image carefully. | First, I find {s}. | Then I check {o}. |
So the answer should be simple. | Wait, {s} might be partly hidden. |
I count the items one by one: 1, 2, 3, 4. | The colors are red, green and blue.
"""
)
_NUMBERS = _phrases(
    """\
0 | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 | 12 | 25 | 100 | 2024
"""
)


def corpus(lines: int = 400, seed: int = SEED) -> list[str]:
    """A deterministic list of varied English lines about images: questions, answers, reasoning."""
    rng = random.Random(seed)
    out: list[str] = []
    for index in range(lines):
        s, v, o = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)
        kind = index % 4
        if kind == 0:
            out.append(rng.choice(_QUESTIONS).format(s=s, v=v, o=o))
        elif kind == 1:
            count = rng.choice(_NUMBERS)
            out.append(f"{s.capitalize()} {v} {o}. I can see {count} of them.")
        elif kind == 2:
            out.append(" ".join(rng.choice(_THOUGHTS).format(s=s, o=o) for _ in range(2)))
        else:
            out.append(f"Answer: {s} {v} {o}, and it is {rng.choice(['yes', 'no', 'maybe'])}!")
    return out


def train_byte_level_bpe(
    vocab_size: int, special_tokens: Iterable[str] = (), split_pattern: str | None = None
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a byte-level BPE on `corpus()`; returns (vocab, merges) with specials first.

    The full 256-symbol byte alphabet is always in the vocabulary, so any text round-trips.
    `split_pattern` is the pre-tokenizer regex of the family's tokenizer class (train with the
    same split the class applies when it loads); None means the GPT-2 byte-level split.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    if split_pattern is None:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tokenizer.normalizer = normalizers.NFC()
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split_pattern), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(pair) for pair in model["merges"]]
    return dict(model["vocab"]), merges


def qwen_style_tokenizer(tokenizer_class, split_pattern: str, specials, chat_template: str):
    """A Qwen2/Qwen3.5 tokenizer: <|endoftext|> pads, <|im_end|> ends a turn.

    `specials` are added as special tokens (never split, dropped by skip_special_tokens).
    """
    vocab, merges = train_byte_level_bpe(VOCAB_SIZE, ["<|endoftext|>"], split_pattern)
    tokenizer = tokenizer_class(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens(
        {
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "extra_special_tokens": ["<|im_start|>", "<|im_end|>", *specials],
        }
    )
    add_think_tokens(tokenizer)
    tokenizer.chat_template = chat_template
    return tokenizer


def llama_style_tokenizer(
    specials,
    chat_template: str | None,
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    add_bos: bool = True,
):
    """A Llama-3-like byte-level tokenizer with bos, eos, <unk> and <pad>.

    With `add_bos`, encoding prepends the bos token, as Llama and Mistral tokenizers do.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab, merges = train_byte_level_bpe(VOCAB_SIZE, ["<unk>", bos_token, eos_token])
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A",
            pair=f"{bos_token} $A {bos_token} $B",
            special_tokens=[(bos_token, vocab[bos_token])],
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=bos_token, eos_token=eos_token, unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"pad_token": "<pad>", "extra_special_tokens": list(specials)})
    add_think_tokens(tokenizer)
    tokenizer.chat_template = chat_template
    return tokenizer


def add_think_tokens(tokenizer) -> None:
    # Whole tokens but not special ones, as in the Qwen vocabularies: decoding with
    # skip_special_tokens keeps them, so reasoning can be told apart from the answer.
    tokenizer.add_tokens(list(THINK_TOKENS))


def decoder_config(model_type: str, tokenizer) -> dict:
    """A text decoder of the tiny sizes (`engine.tiny.sizes.TEXT_SIZES`)."""
    return {
        "model_type": model_type,
        "vocab_size": len(tokenizer),
        **TEXT_SIZES,
        "max_position_embeddings": 4096,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def seed_everything(seed: int = SEED) -> None:
    """Seed Python and torch so a rebuilt checkpoint has the same weights."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def save_checkpoint(folder: Path, model, processor, tokenizer, eos_tokens: Iterable[str]) -> None:
    """Quiet the control tokens, attach a generation config, write everything to `folder`."""
    from transformers import GenerationConfig

    # Every added token (specials, image layout markers, think tags) plus named specials.
    silent = list(tokenizer.added_tokens_decoder)
    silent += [tokenizer.convert_tokens_to_ids(token) for token in tokenizer.all_special_tokens]
    silence_tokens(model, silent + unprintable_ids(tokenizer))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(list(eos_tokens)),
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def silence_tokens(model: torch.nn.Module, token_ids: Iterable[int]) -> None:
    """Zero the output-embedding rows of `token_ids`.

    A random model otherwise picks control tokens (end of turn, image placeholders) about as
    often as words, so greedy answers would stop after a token or two or decode to nothing.
    With these rows at zero their logit is 0 while ordinary tokens spread around it, so greedy
    decoding always yields visible text; sampling can still end a turn now and then.
    The tiny models keep input and output embeddings apart, so inputs are untouched.
    """
    import torch

    ids = sorted(set(token_ids))
    with torch.no_grad():
        model.get_output_embeddings().weight[ids] = 0.0


def unprintable_ids(tokenizer) -> list[int]:
    """Ids of vocabulary entries that do not decode to printable text on their own.

    Byte-level vocabularies hold lone bytes of multi-byte characters and control bytes; a random
    model emitting them would stream replacement characters.
    """
    ids = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if "\ufffd" in text or any(not (c.isprintable() or c in "\n\t") for c in text):
            ids.append(token_id)
    return ids


def folder_size(path: Path) -> int:
    """Total bytes of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
