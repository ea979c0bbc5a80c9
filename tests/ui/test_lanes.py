"""Only the model makes one visitor wait for another.

Gradio runs each queued event function one call at a time unless it is told otherwise: the
page's events that never wait for the model (redrawing the conversation list after an answer,
closing a settled comparison, switching between answers, restoring consent at load, the
model status poll) would otherwise queue every visitor behind every other one. The answering
events share the model's lane, as wide as the engine's batch; the data tab's, which only the
owner uses and whose export is heavy, run one at a time.
"""

from __future__ import annotations

import app
from engine.local import LocalEngine
from storage import Store
from studio.turns import Studio
from ui.page import build_page

OWNERS_ONLY = {"refresh_data", "make_export", "refresh_evaluations"}


def test_only_the_models_events_and_the_owners_wait_in_line(tmp_path):
    settings = app.settings_from(["--db", str(tmp_path / "studio.db")], {})
    with Store(settings.db_path) as store:
        demo = build_page(Studio(LocalEngine("tiny-random"), store), settings)
    # A closed tab's `unload` is called by Gradio directly, outside the queue.
    queued = [fn for fn in demo.fns.values() if fn.queue and fn.name != "unload"]
    in_line = {fn.name for fn in queued
               if fn.concurrency_limit is not None and fn.concurrency_id != "model"}
    assert in_line == OWNERS_ONLY
    model = {fn.name for fn in queued if fn.concurrency_id == "model"}
    assert model == {"respond", "ask_directly", "regenerate", "run_compare"}
    assert {fn.concurrency_limit for fn in queued if fn.concurrency_id == "model"} == {
        settings.max_batch}
