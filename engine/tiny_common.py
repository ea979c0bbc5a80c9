"""Shared parts of the tiny random checkpoints: corpus, tokenizer training, weight touch-ups.

`engine.tiny` builds the checkpoints; the per-family builders in `engine.tiny_*` use these
helpers so that every family gets the same kind of byte-level BPE vocabulary, trained offline on
a small generated English corpus, and the same seeded weights. Nothing here downloads anything.
Heavy imports (torch, tokenizers, transformers) happen inside the functions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SEED = 1234
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


def seed_everything(seed: int = SEED) -> None:
    """Seed Python and torch so a rebuilt checkpoint has the same weights."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)


def silence_tokens(model: torch.nn.Module, token_ids: Iterable[int]) -> None:
    """Zero the output-embedding rows of `token_ids`.

    A random model otherwise picks control tokens (end of turn, image placeholders) about as
    often as words, so greedy answers would stop after a token or two or decode to nothing.
    With these rows at zero their logit is 0 while ordinary tokens spread around it, so greedy
    decoding always yields visible text; sampling can still end a turn now and then.
    Must run before weights are tied or saved; with tied embeddings the input rows go too,
    which only matters for tokens the model never reads.
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


def folder_size(path) -> int:
    """Total bytes of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
