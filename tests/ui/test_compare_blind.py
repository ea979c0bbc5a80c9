"""Comparing the base model with an adapter is blind until the verdict: neither side's
stats line names its model or adapter, and the verdict tells which was which.

The page's events run as Gradio runs them (`tests.page_events`) on the real tiny engine with a
real LoRA adapter trained here, and a real SQLite file.
"""

from __future__ import annotations

import sqlite3

import pytest

from engine.local import LocalEngine
from engine.tiny import ensure_tiny
from testing.lora import train_lora
from tests.page_events import SETTINGS, open_tab

# The compare panel's outputs come last (`ui.compare.ComparePanel.outputs`): the panel, its
# note, side A, side B, then the four verdict buttons.
NOTE, SIDE_A, SIDE_B = -7, -6, -5


@pytest.fixture(scope="module")
def tuned_engine(tmp_path_factory):
    adapter = train_lora(ensure_tiny("qwen3_5"), tmp_path_factory.mktemp("lora") / "tuned",
                         question="what?", target="a horse", steps=2)
    engine = LocalEngine("tiny-random", quantize="none", device="cpu",
                         adapters={"tuned": adapter})
    engine.load()
    yield engine
    engine.close()


def test_base_against_adapter_names_neither_side_before_the_verdict(tuned_engine, tmp_path):
    with open_tab(tuned_engine, tmp_path) as tab:
        tab.run("poll")  # as on the page: the compare modes follow the loaded model
        streamed = tab.run("run_compare", {"text": "which is it?", "files": []}, None,
                           "adapter", *SETTINGS)
        sides = [str(update[side]) for update in streamed for side in (SIDE_A, SIDE_B)]
        finished = [side for side in sides if " tokens · " in side]
        assert len(finished) >= 2
        assert not [side for side in sides if "tuned" in side or "tiny-random" in side]

        judged = tab.run("judge", None)  # the first verdict button: A is better
        reveal, side_a, side_b = (str(judged[-1][i]) for i in (NOTE, SIDE_A, SIDE_B))
        assert "Base model" in reveal and "Adapter tuned" in reveal
        assert "tuned" in side_a + side_b and "tiny-random" in side_a + side_b
        with sqlite3.connect(tab.db_path) as db:
            adapters = sorted(str(row[0]) for row in db.execute(
                "select adapter from messages where role = 'assistant'"))
        assert adapters == ["None", "tuned"]
