"""Text from a model server or a user stays inert wherever the page shows it.

A hostile OpenAI-compatible server names its adapter and words its errors as HTML and
Markdown images pointing at another host; a user titles a conversation the same way. The
status line, the toasts and the history show that text literally, and the other host is never
asked for anything.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.page_actions import SIDEBAR, give_consent

pytestmark = pytest.mark.browser


class _Server:
    """A loopback HTTP server answering with `reply(handler)`; it keeps every path asked."""

    def __init__(self, reply) -> None:
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.paths.append(self.path)
                reply(self)

            def do_POST(self):
                owner.paths.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                reply(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _send(handler, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


@pytest.fixture
def outside():
    """The host hostile text tries to make the browser fetch."""
    server = _Server(lambda handler: _send(handler, 404, {}))
    yield server
    server.close()


@pytest.fixture
def hostile(outside):
    lure = (f'<img src="http://127.0.0.1:{outside.port}/html.png">'
            f'![x](http://127.0.0.1:{outside.port}/markdown.png)')

    def reply(handler):
        if handler.command == "GET":
            _send(handler, 200, {"object": "list", "data": [
                {"id": "served-model", "object": "model", "parent": None},
                {"id": "tuned" + lure, "object": "model", "parent": "served-model"}]})
        else:
            _send(handler, 500, {"detail": "overloaded " + lure})

    server = _Server(reply)
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
    page.locator(SIDEBAR).click()
    page.locator("#conversations").get_by_text("what is it?").wait_for(timeout=30_000)
    assert page.locator("#conversations img").count() == 0
    assert page.locator("#chatbot img").count() == 0
    # No element points at the other host, and it was never asked for anything.
    assert page.locator(f"[src*='{outside.port}']").count() == 0
    assert outside.paths == []
    assert hostile.paths  # the app did talk to the model server
