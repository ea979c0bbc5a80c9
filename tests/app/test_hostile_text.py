"""Text from a model server or a user stays inert wherever the page shows it.

A hostile OpenAI-compatible server names its adapter and words its errors as HTML and
Markdown images pointing at another host; a user titles a conversation the same way. The
status line, the toasts and the history show that text literally, and the other host is never
asked for anything.
"""

from __future__ import annotations

import pytest

from tests.page_actions import SIDEBAR, give_consent, wait_for_box
from tests.scripted_server import ScriptedServer, model_listing, send_json, send_stream

pytestmark = pytest.mark.browser


@pytest.fixture
def outside():
    """The host hostile text tries to make the browser fetch."""
    server = ScriptedServer(lambda handler: send_json(handler, 404, {}))
    yield server
    server.close()


@pytest.fixture
def hostile(outside):
    lure = (f'<img src="http://127.0.0.1:{outside.port}/html.png">'
            f'![x](http://127.0.0.1:{outside.port}/markdown.png)')

    posts = []

    def reply(handler):
        if handler.command == "GET":
            send_json(handler, 200, model_listing("served-model", "tuned" + lure))
            return
        posts.append(handler.path)
        if len(posts) == 1:  # the first question fails, the second is answered
            send_json(handler, 500, {"detail": "overloaded " + lure})
        else:
            send_stream(handler, "answer " + lure)

    server = ScriptedServer(reply)
    yield server
    server.close()


def test_hostile_server_and_user_text_is_shown_inert(launch_app, page, hostile, outside):
    app = launch_app("--engine", "openai", "--base-url", f"http://127.0.0.1:{hostile.port}/v1",
                     "--model", "served-model")
    page.goto(app.url)
    status = page.locator("#model-status")
    status.get_by_text("adapters:").wait_for(timeout=60_000)
    assert "<img" in status.inner_text()  # shown as text, not as an element
    assert status.locator("img").count() == 0

    give_consent(page)
    box = page.locator("#question textarea")
    box.fill(f'<img src="http://127.0.0.1:{outside.port}/title.png"> what is it?')
    box.press("Enter")
    toast = page.locator(".toast-body:has-text('overloaded')").first
    toast.wait_for(timeout=60_000)
    assert "<img" in toast.inner_text()
    assert page.locator(".toast-body img").count() == 0
    # The failed question stayed in the box; asked again, it is answered with the lure.
    wait_for_box(page, f'<img src="http://127.0.0.1:{outside.port}/title.png"> what is it?')
    box.press("Enter")
    page.locator("#chatbot").get_by_text("answer <img").wait_for(timeout=60_000)
    page.locator(SIDEBAR).click()
    page.locator("#conversations").get_by_text("what is it?").wait_for(timeout=30_000)
    assert page.locator("#conversations img").count() == 0
    assert page.locator("#chatbot img").count() == 0
    # No element points at the other host, and it was never asked for anything.
    assert page.locator(f"[src*='{outside.port}']").count() == 0
    assert outside.paths == []
    assert hostile.paths  # the app did talk to the model server
