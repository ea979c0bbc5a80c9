"""The page's events run as Gradio runs them, without a browser, for the tests.

`Tab` builds the page and one tab's session on it; `run` passes an event's inputs through
`Blocks.process_api` (each input through its component, then the handler, then each output
through its component) and checks that every update is one Gradio can send: it writes them
with orjson, and the page loses an update it cannot write, and its connection with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3

import orjson
from gradio.state_holder import SessionState

import app
from storage import Store
from studio.turns import ChatState, Studio
from ui.common import VIEW_SIZE
from ui.page import build_page

# think, thinking budget, max new tokens, temperature, top p, top k, seed, adapter
SETTINGS = [True, 16, 48, 0.0, 1.0, 0, "1", "Base model"]
SEED = 6  # where the seed is in SETTINGS
BOX = VIEW_SIZE  # the question box comes right after the chat view in the answering outputs


class Tab:
    """The built page and one tab's session on it, whose events run through Gradio."""

    def __init__(self, studio: Studio, settings) -> None:
        self.studio, self.db_path = studio, settings.db_path
        self.demo = build_page(studio, settings)
        self.session = SessionState(self.demo)
        self.state_id = self._event("echo").inputs[1]._id
        state = ChatState()
        state.consented = True
        self.session[self.state_id] = state

    @property
    def state(self) -> ChatState:
        return self.session[self.state_id]

    def _event(self, name: str):
        return next(fn for fn in self.demo.fns.values() if fn.name == name)

    def run(self, name: str, *inputs) -> list[list]:
        """Every update the event sends, each written as Gradio's event stream writes it."""
        event = self._event(name)

        async def updates() -> list[list]:
            sent, iterator = [], None
            while True:
                out = await self.demo.process_api(event, list(inputs), self.session,
                                                  iterator=iterator)
                orjson.dumps(out["data"], default=str)
                sent.append(out["data"])
                iterator = out["iterator"]
                if not out["is_generating"]:
                    return sent

        # On a thread of its own: Playwright's sync API, once a browser test has run, keeps
        # an event loop running in the main thread, where asyncio.run cannot start another.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, updates()).result()

    def ask(self, text: str) -> list[list]:
        """Enter in the box: the echo, the answer, then the release, as the page chains them;
        the answer's updates."""
        self.run("echo", {"text": text, "files": []}, None)
        answered = self.run("respond", None, None, *SETTINGS)
        self.run("release", None, None)
        return answered

    def questions(self) -> list[str]:
        with sqlite3.connect(self.db_path) as db:
            return [row[0] for row in db.execute(
                "select text from messages where role = 'user' order by created_at")]


@contextlib.contextmanager
def open_tab(engine, tmp_path):
    """A consented tab on a page built over `engine` and a new SQLite file."""
    settings = app.settings_from(["--db", str(tmp_path / "studio.db")], {})
    with Store(settings.db_path) as store:
        yield Tab(Studio(engine, store), settings)


def finished(updates: list[list]) -> str:
    """The chat as the update that draws the finished answer (its stats line) shows it."""
    chats = [str(update[0]) for update in updates if " tokens · " in str(update[0])]
    return chats[-1] if chats else ""
