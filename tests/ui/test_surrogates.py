"""A question holding a lone UTF-16 surrogate (a browser can send one: pasted text) is shown,
answered and stored with U+FFFD in its place, and the tab asks on afterwards.

The page's events run here as Gradio runs them (`tests.page_events`), on the real tiny
engine and a real SQLite file; every update must be one Gradio can send, and orjson, which it
writes them with, refuses a lone surrogate. The question goes back out before the studio has
seen it in the page's echo, and whenever a refused question is given back to the box (the
page, the API, compare).
In Chromium, the same question pasted into the box is answered, and so is the next one.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.conftest import wait_rows
from tests.page_actions import give_consent, open_page, submit_question
from tests.page_events import BOX, SETTINGS, open_tab
from tests.page_events import finished as _finished

QUESTION = "lone \ud83d surrogate"
SHOWN = "lone \ufffd surrogate"


@pytest.fixture
def tab(tiny_engine, tmp_path):
    with open_tab(tiny_engine, tmp_path) as tab:
        yield tab


def test_a_lone_surrogate_is_echoed_answered_and_stored_as_a_replacement(tab):
    echoed = tab.run("echo", {"text": QUESTION, "files": []}, None)
    assert echoed[-1][0][-1]["content"] == [{"type": "text", "text": SHOWN}]
    answered = tab.run("respond", None, None, *SETTINGS)
    tab.run("release", None, None)
    assert SHOWN in _finished(answered)
    assert tab.questions() == [SHOWN]
    assert not tab.state.busy

    assert _finished(tab.ask("and a plain one?"))
    assert tab.questions() == [SHOWN, "and a plain one?"]


def test_a_refused_question_goes_back_to_the_box_with_a_replacement(tab, tmp_path):
    # The image is gone by the time the question is asked: the studio refuses the question
    # before storing anything, and gives it back to the box.
    gone = {"path": str(tmp_path / "gone.png"), "meta": {"_type": "gradio.FileData"}}
    asked = {"text": QUESTION, "files": [gone]}

    tab.run("echo", asked, None)
    refused = tab.run("respond", None, None, *SETTINGS)
    tab.run("release", None, None)
    assert refused[0][BOX]["text"] == SHOWN
    assert not tab.state.busy

    refused = tab.run("ask_directly", asked, None, *SETTINGS)  # the "chat" API endpoint
    assert refused[0][BOX]["text"] == SHOWN

    refused = tab.run("run_compare", asked, None, "samples", *SETTINGS)
    assert refused[0][BOX]["text"] == SHOWN

    assert tab.questions() == []
    assert not tab.state.busy
    assert _finished(tab.ask("and now?"))


def test_an_echo_that_fails_leaves_the_tab_free_and_asks_nothing(tab, monkeypatch):
    def broken(state):
        raise RuntimeError("no verdict to settle")

    def ask_with_a_failing_echo(text: str) -> None:
        with monkeypatch.context() as patched:
            patched.setattr(tab.studio, "settle_comparison", broken)
            # Gradio goes on to the answering event whether or not the echo failed.
            with contextlib.suppress(RuntimeError):
                tab.run("echo", {"text": text, "files": []}, None)
        tab.run("respond", None, None, *SETTINGS)
        tab.run("release", None, None)

    ask_with_a_failing_echo("the first question")  # nothing was pending yet
    assert not tab.state.busy
    assert tab.questions() == []
    assert _finished(tab.ask("the first question"))

    ask_with_a_failing_echo("the second question")  # the first question was pending
    assert not tab.state.busy
    assert tab.questions() == ["the first question"]  # not asked again
    assert _finished(tab.ask("the second question"))
    assert tab.questions() == ["the first question", "the second question"]


@pytest.mark.browser
def test_a_pasted_lone_surrogate_is_answered_and_the_tab_asks_on(launch_app, page):
    app = launch_app("--max-new-tokens-limit", "48")
    open_page(page, app)
    give_consent(page)
    page.get_by_label("Think before answering").uncheck()
    # What a paste can leave in the box, which typing cannot.
    page.evaluate("""text => { const box = document.querySelector('#question textarea');
                               box.value = text;
                               box.dispatchEvent(new Event('input', {bubbles: true})); }""",
                  QUESTION)
    page.locator("#question textarea").press("Enter")
    _wait_for_answers(page, 1)
    page.locator("#chatbot").get_by_text(SHOWN).wait_for(timeout=30_000)

    submit_question(page, "and a plain one?")
    _wait_for_answers(page, 2)
    questions = wait_rows(app, "select text from messages where role = 'user' "
                               "order by created_at", count=2)
    assert [row["text"] for row in questions] == [SHOWN, "and a plain one?"]


def _wait_for_answers(page, count: int) -> None:
    """Until `count` answers in the chat show their stats line (they have finished)."""
    page.wait_for_function(
        """count => [...document.querySelectorAll('#chatbot .message-row.bot-row')]
                   .filter(row => row.innerText.includes(' tokens · ')).length >= count""",
        arg=count, timeout=90_000)
