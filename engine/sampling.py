"""One meaning of a request's sampling settings, whichever way it is decoded.

`resolve(sampling, defaults)` combines a request's `Sampling` with the checkpoint's
`generation_config` into the `Decoding` both decoding paths run: `model.generate` gets every
field explicitly (so nothing of the checkpoint's own settings slips in unseen), and the batch
scheduler builds the same transformers logits processors from it.

Rules (also in docs/models.md):
- `temperature` 0 is greedy; above 0 the request's temperature and `top_p` are used;
- `top_k` 0 keeps the checkpoint's `top_k` (none when the checkpoint sets none), as a server
  does when the field is not sent; any other value overrides it;
- `repetition_penalty` None keeps the checkpoint's (Qwen2.5-VL's is 1.05); any value overrides
  it, and 1.0 is off;
- `seed` None means "pick one and report it": `pick_seed` is where it is picked, whoever picks.

Knows nothing of torch, the UI or the database.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from engine.types import Sampling

# Seeds are picked below 2**31 so that every backend takes them (torch, servers' int32 fields).
SEED_RANGE = 2**31


def pick_seed(seed: int | None) -> int:
    """`seed` itself, or a fresh random one when it is None."""
    return seed if seed is not None else random.randrange(SEED_RANGE)


@dataclass(frozen=True)
class Decoding:
    """What decoding does at each step, settled for one request."""

    do_sample: bool
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # None: no top-k filtering
    repetition_penalty: float | None = None  # None: no penalty

    def generate_kwargs(self) -> dict:
        """Every setting, explicitly, for `model.generate`: a setting that is off is given its
        neutral value, so the checkpoint's own value cannot stand in for it."""
        if not self.do_sample:
            return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None,
                    "repetition_penalty": self.repetition_penalty or 1.0}
        return {
            "do_sample": self.do_sample,
            "temperature": self.temperature,
            "top_p": self.top_p if self.top_p is not None else 1.0,
            "top_k": self.top_k or 0,
            "repetition_penalty": self.repetition_penalty or 1.0,
        }


def resolve(sampling: Sampling, defaults) -> Decoding:
    """The request's settings over the checkpoint's `defaults` (a GenerationConfig or None)."""
    top_k = sampling.top_k or getattr(defaults, "top_k", None) or None
    penalty = sampling.repetition_penalty
    if penalty is None:
        penalty = getattr(defaults, "repetition_penalty", None)
    if penalty is not None and float(penalty) == 1.0:
        penalty = None
    if not sampling.temperature or sampling.temperature <= 0:
        return Decoding(do_sample=False, repetition_penalty=penalty)
    top_p = sampling.top_p if sampling.top_p is not None and sampling.top_p < 1.0 else None
    return Decoding(do_sample=True, temperature=sampling.temperature, top_p=top_p,
                    top_k=top_k, repetition_penalty=penalty)
