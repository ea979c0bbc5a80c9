"""What to evaluate on: the examples of a split, and their prompts as engine messages.

`held_out` keeps the examples of the eval or train split, using the export's split by conversation,
so nothing an adapter was trained on leaks into its score. `PromptImages` turns a stored
example's prompt into engine messages, keeping the most recently used images decoded.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from engine.errors import ImageError
from engine.types import Message
from evaluation.results import Split
from exports.examples import Example, in_eval_split
from storage.errors import NotFound
from storage.store import Store

DEFAULT_EVAL_FRACTION = 0.1


def held_out(examples: Iterable[Example], split: Split, eval_fraction: float) -> list[Example]:
    """The examples of `split`, using the export's split by conversation."""
    if split == "all":
        return list(examples)
    wanted = split == "eval"
    return [e for e in examples if in_eval_split(e, eval_fraction) == wanted]


class PromptImages:
    """Stored images as the engine wants them; the most recently used ones stay decoded."""

    def __init__(self, store: Store, keep: int = 16) -> None:
        from engine.images import ImagePolicy

        self.store = store
        self.policy = ImagePolicy()
        self.keep = keep
        self._cache: OrderedDict[str, Any] = OrderedDict()

    def messages(self, example: Example) -> tuple[Message, ...] | None:
        """The example's prompt as engine messages; None when one of its images is gone or
        can no longer be read."""
        from engine.images import load_image

        messages = []
        for turn in example.prompt:
            images = []
            for sha in turn.image_shas:
                if sha not in self._cache:
                    try:
                        path = self.store.image_path(sha)
                    except NotFound:
                        return None
                    if not path.exists():
                        return None
                    try:
                        self._cache[sha] = load_image(path, self.policy)
                    except ImageError:
                        return None
                    # Decoded images take megabytes each: keep only the recent ones.
                    while len(self._cache) > self.keep:
                        self._cache.popitem(last=False)
                self._cache.move_to_end(sha)
                images.append(self._cache[sha])
            messages.append(Message(turn.role, turn.text, tuple(images)))
        return tuple(messages)
