"""A setting that cannot be used is refused like any question: with its message, the question
given back to the box, nothing stored, and the tab free to ask on.

The page's events run as Gradio runs them (`tests.page_events`) on the real tiny engine and a
real SQLite file: the page's Enter (echo, answer, release), the "chat" API endpoint, and
compare. A seed that is no number, or one outside what every backend takes, once gave a bare
"Error" and lost the question, or failed the model itself. A first answer that fails midway
(a model server hanging up) gives its question back too.
"""

from __future__ import annotations

import json
import sqlite3

import gradio as gr
import pytest

from engine.remote import RemoteEngine
from tests.page_events import BOX, SEED, SETTINGS, finished, open_tab
from tests.scripted_server import ScriptedServer, model_listing, send_json


@pytest.fixture
def tab(tiny_engine, tmp_path):
    with open_tab(tiny_engine, tmp_path) as tab:
        yield tab


def _with_seed(seed: str) -> list:
    settings = list(SETTINGS)
    settings[SEED] = seed
    return settings


@pytest.mark.parametrize("seed", ["abc", "99999999999999999999", "1e30", "-1", "inf", "1e400",
                                  "nan"])
def test_a_seed_that_cannot_be_used_gives_the_question_back(tab, seed, monkeypatch):
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    asked = {"text": "what colour is it?", "files": []}
    tab.run("echo", asked, None)
    refused = tab.run("respond", None, None, *_with_seed(seed))
    tab.run("release", None, None)
    assert refused[0][BOX]["text"] == "what colour is it?"
    assert not finished(refused)
    assert not tab.state.busy and tab.state.turns == []

    refused = tab.run("ask_directly", asked, None, *_with_seed(seed))  # the "chat" endpoint
    assert refused[0][BOX]["text"] == "what colour is it?"
    refused = tab.run("run_compare", asked, None, "samples", *_with_seed(seed))
    assert refused[0][BOX]["text"] == "what colour is it?"

    assert tab.questions() == []
    assert not tab.state.busy
    assert finished(tab.ask("and with the usual seed?"))
    # Each refusal said what was wrong with the seed.
    assert len(warnings) == 3 and all("seed" in warning for warning in warnings), warnings


def test_the_largest_seed_compares_two_samples(tab):
    """The second sample takes the next seed, which wraps around within the range."""
    asked = {"text": "which is better?", "files": []}
    tab.run("run_compare", asked, None, "samples", *_with_seed("2147483647"))
    assert tab.questions() == ["which is better?"]
    assert not tab.state.busy and tab.state.comparison is not None
    with sqlite3.connect(tab.db_path) as db:
        answers = db.execute("select status, seed from messages where role = 'assistant'"
                             ).fetchall()
    assert sorted(answers) == [("done", 0), ("done", 2147483647)]


def _breaks_off(handler) -> None:
    """A model server that lists its model, then sends two pieces of an answer and hangs up."""
    if handler.command == "GET":
        send_json(handler, 200, model_listing("m"))
        return
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.end_headers()
    for text in ("A red", " square"):
        chunk = {"object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        handler.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
    handler.wfile.flush()


def test_a_first_answer_that_breaks_off_gives_the_question_back(tmp_path):
    server = ScriptedServer(_breaks_off)
    remote = RemoteEngine(server.url, "m", timeout_s=30)
    try:
        remote.load()
        with open_tab(remote, tmp_path) as tab:
            asked = {"text": "what shape is it?", "files": []}
            tab.run("echo", asked, None)
            answered = tab.run("respond", None, None, *SETTINGS)
            tab.run("release", None, None)
            assert answered[-2][BOX]["text"] == "what shape is it?"
            assert "what shape is it?" not in str(answered[-2][0])
            assert not tab.state.busy and tab.state.turns == []
    finally:
        remote.close()
        server.close()
