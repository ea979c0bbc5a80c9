"""An engine's stream, added up, for tests and benchmarks: the reasoning and answer texts, the
kind of each delta, and the one "done" event.

`collect` also holds the stream to the protocol (`engine.protocol.Engine.stream`): exactly one
"done" event, and nothing after it.
"""

from __future__ import annotations

from collections.abc import Iterable


def collect(events: Iterable) -> tuple[dict[str, str], list[str], object]:
    """(texts by kind, kinds of the deltas in order, the done event) of a whole stream."""
    texts = {"reasoning": "", "answer": ""}
    kinds: list[str] = []
    done = None
    for event in events:
        assert done is None, "an event after done"
        if event.kind == "done":
            done = event
        else:
            texts[event.kind] += event.text
            kinds.append(event.kind)
    assert done is not None, "the stream ended without a done event"
    return texts, kinds, done
