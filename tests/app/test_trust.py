"""Each visitor's data is theirs alone and erasable at any time, against the real app.

Two API clients and two browser profiles at once never see, rename or erase each other's
conversations; a browser keeps its identity and its consent across a restart of the server,
so its history is listed, what it asks next is kept, and "Delete my data" still removes
everything (rows and image files), leaving nothing the visitor typed in the browser's own
storage either. Every judgement is checked in the SQLite file.
"""

from __future__ import annotations

import time
from functools import partial

import pytest
from PIL import Image
from playwright.sync_api import expect

from testing.processes import free_port
from tests.conftest import rows, wait_rows
from tests.page_actions import (
    SIDEBAR,
    delete_all_data,
    give_consent,
    open_page,
    start_new_chat,
    submit_question,
)

pytestmark = pytest.mark.browser

BOT = "#chatbot .message-row.bot-row"
SETTINGS = (False, 0, 8, 0.0, 1.0, 0, 1, "Base model")


_rows = rows
_wait_rows = partial(wait_rows, timeout=60.0)


def _ask_api(client, text: str):
    return client.predict({"text": text, "files": []}, *SETTINGS, api_name="/chat")


def _wait_until_answering(client) -> None:
    """The model loads behind the page: ask (without consent) until it answers."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if "tokens ·" in str(_ask_api(client, "ready?")):
            return
        time.sleep(0.5)
    pytest.fail("the model never answered")


def test_two_api_clients_are_two_people(launch_app):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    app = launch_app("--max-new-tokens-limit", "64")
    first, second = Client(app.url, verbose=False), Client(app.url, verbose=False)
    try:
        _wait_until_answering(first)
        first.predict(True, api_name="/set_consent")
        _ask_api(first, "first: my private question")
        second.predict(True, api_name="/set_consent")
        _ask_api(second, "second: my own question")
        conversations = _wait_rows(app, "select * from conversations", count=2)
        assert len(conversations) == 2
        assert len({row["client_hash"] for row in conversations}) == 2
        mine = _rows(app, """select c.id from conversations c join messages m
                             on m.conversation_id = c.id
                             where m.text = 'first: my private question'""")[0]["id"]
        # Consent keeps the conversation so far, so its title is the first question asked.
        title = _rows(app, "select title from conversations where id = ?", mine)[0]["title"]

        # The second client can neither read, rename nor delete the first one's conversation.
        try:
            shown = second.predict(mine, api_name="/open_conversation")
        except AppError as refused:  # not among this client's conversations
            shown = str(refused)
        assert "my private question" not in str(shown)
        second.predict("stolen", api_name="/rename_conversation")
        second.predict(api_name="/delete_my_data")
        left = _rows(app, "select id, title from conversations")
        assert [(row["id"], row["title"]) for row in left] == [(mine, title)]
        assert _rows(app, "select * from messages where text = 'first: my private question'")
        assert not _rows(app, "select * from messages where text = 'second: my own question'")
    finally:
        first.close()
        second.close()


def _image(tmp_path, name, color):
    path = tmp_path / name
    Image.new("RGB", (64, 48), color).save(path)
    return path


def _wait_answer(page, timeout=90_000):
    page.wait_for_function(
        """selector => [...document.querySelectorAll(selector)]
               .some(row => row.innerText.includes(' tokens · '))""",
        arg=BOT, timeout=timeout)


def _ready(page, app):
    open_page(page, app)
    page.get_by_label("Think before answering").uncheck()


def _listed(page) -> str:
    page.locator(SIDEBAR).click()
    text = page.locator("#conversations").inner_text()
    page.locator(SIDEBAR).click()
    return text


def test_two_browsers_at_once_see_only_their_own_history(launch_app, browser, tmp_path):
    app = launch_app("--max-new-tokens-limit", "48")
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(2)]
    try:
        pages = [context.new_page() for context in contexts]
        for page in pages:
            _ready(page, app)
            give_consent(page)
        submit_question(pages[0], "alice: where is my cat?", _image(tmp_path, "a.png", (9, 9, 9)))
        submit_question(pages[1], "bob: what is this?", _image(tmp_path, "b.png", (1, 90, 1)))
        for page in pages:
            _wait_answer(page)
        rows = _wait_rows(app, "select client_hash from conversations", count=2)
        assert len({row["client_hash"] for row in rows}) == 2
        for page, own, other in ((pages[0], "alice", "bob"), (pages[1], "bob", "alice")):
            page.locator(SIDEBAR).click()
            page.locator("#conversations").get_by_text(own).wait_for(timeout=30_000)
            assert other not in page.locator("#conversations").inner_text()
            page.locator(SIDEBAR).click()
        # Bob erases his data; Alice's stays, with her image.
        pages[1].locator(SIDEBAR).click()
        delete_all_data(pages[1], 1)
        texts = [row["text"] for row in _rows(app, "select text from messages where role='user'")]
        assert texts == ["alice: where is my cat?"]
        assert len(_rows(app, "select * from images")) == 1
    finally:
        for context in contexts:
            context.close()


def test_saving_turned_off_in_one_tab_is_off_in_the_browsers_other_tabs(launch_app, browser):
    """Two tabs of one browser: unticking "Save my data" in one unticks it in the other, and
    what the other asks next is not kept."""
    app = launch_app("--max-new-tokens-limit", "48")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        first, second = context.new_page(), context.new_page()
        _ready(first, app)
        give_consent(first)
        _ready(second, app)  # comes up ticked: the browser consented
        expect(second.get_by_label("Save my data")).to_be_checked()
        first.get_by_label("Save my data").uncheck()
        first.wait_for_selector("#consent-note:has-text('Saving off')")
        expect(second.get_by_label("Save my data")).not_to_be_checked()
        expect(second.locator("#consent-note")).to_contain_text("in another tab")
        submit_question(second, "second tab: not to be kept")
        _wait_answer(second)
        assert _rows(app, "select * from messages") == []
    finally:
        context.close()


def test_two_visitors_who_upload_the_same_picture_both_get_their_answer(launch_app, browser,
                                                                        tmp_path):
    import hashlib

    cache = tmp_path / "gradio"
    app = launch_app("--max-new-tokens-limit", "48", env={"GRADIO_TEMP_DIR": str(cache)})
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(2)]
    try:
        alice, bob = (context.new_page() for context in contexts)
        for page in (alice, bob):
            _ready(page, app)
            give_consent(page)
        # The same bytes under the same name: Gradio stores both uploads as one file.
        picture = _image(tmp_path, "shared.jpg", (200, 30, 30))
        bob_box = bob.locator("#question")
        bob_box.locator("input[type=file]").set_input_files(str(picture))
        bob_box.locator("img").first.wait_for(timeout=30_000)

        submit_question(alice, "alice: what colour?", picture)
        _wait_answer(alice)
        # A second answer for Alice: her first turn has let go of its upload by then.
        submit_question(alice, "alice: and now?")
        alice.wait_for_function(
            """selector => [...document.querySelectorAll(selector)]
                   .filter(row => row.innerText.includes(' tokens · ')).length >= 2""",
            arg=BOT, timeout=90_000)

        bob_box.locator("textarea").fill("bob: what colour?")
        bob_box.locator("textarea").press("Enter")
        bob.wait_for_function(
            """selector => [...document.querySelectorAll(selector)]
                   .some(row => row.innerText.includes(' tokens · '))
                 || document.querySelector('.toast-body.warning')""", arg=BOT, timeout=90_000)
        warnings = bob.locator(".toast-body.warning")
        assert warnings.count() == 0, warnings.first.inner_text()
        asked = _wait_rows(app, """select m.text, i.image_sha from messages m
                                   join message_images i on i.message_id = m.id
                                   where m.text like '%what colour?'""", count=2)
        assert sorted(row["text"] for row in asked) == ["alice: what colour?",
                                                        "bob: what colour?"]
        assert len({row["image_sha"] for row in asked}) == 1  # one picture, stored once
        # Both turns took it: the upload is gone.
        _wait_gone(cache, hashlib.sha256(picture.read_bytes()).hexdigest())
    finally:
        for context in contexts:
            context.close()


def _wait_consent_restored(page) -> None:
    """The page ticks "Save my data" by itself once it has read the browser's consent."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_selector("#consent input[type=checkbox]:checked", timeout=30_000)
    except PlaywrightTimeout:
        pytest.fail("the consent this browser gave was forgotten")


def test_consent_history_and_erasure_survive_a_restart(launch_app, browser, tmp_path):
    port = free_port()
    app = launch_app("--max-new-tokens-limit", "48", port=port)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        _ready(page, app)
        give_consent(page)
        submit_question(page, "rs: remember me", _image(tmp_path, "r.png", (200, 10, 10)))
        _wait_answer(page)
        _wait_rows(app, "select * from messages where role = 'assistant' and status = 'done'")
        images_dir = app.db_path.parent / "images"
        assert [p for p in images_dir.rglob("*") if p.is_file()]

        # The same browser profile comes back to the same address after the restart.
        page.close()
        app.stop()
        restarted = launch_app("--max-new-tokens-limit", "48", port=port)
        assert restarted.db_path == app.db_path
        page = context.new_page()
        _ready(page, restarted)
        # Consent is remembered too: what is asked now is kept, under the same identity.
        _wait_consent_restored(page)
        submit_question(page, "rs: asked after the restart")
        _wait_answer(page)
        asked = _wait_rows(restarted, """select c.client_hash from messages m
                                         join conversations c on c.id = m.conversation_id
                                         where m.text = ?""", "rs: asked after the restart")
        assert len(asked) == 1, "the question asked after the restart was not stored"
        before = _rows(restarted, """select c.client_hash from messages m
                                     join conversations c on c.id = m.conversation_id
                                     where m.text = 'rs: remember me'""")
        assert asked[0]["client_hash"] == before[0]["client_hash"]
        page.locator(SIDEBAR).click()
        page.locator("#conversations").get_by_text("rs: remember me").wait_for(timeout=30_000)
        delete_all_data(page, 2)
        for table in ("conversations", "messages", "message_images", "feedback", "images"):
            assert _rows(restarted, f"select * from {table}") == [], table
        assert [p for p in images_dir.rglob("*") if p.is_file()] == []
    finally:
        context.close()


def _files_under(folder):
    return [p for p in folder.rglob("*") if p.is_file()]


def _digests(folder):
    import hashlib

    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in _files_under(folder)}


def _wait_gone(folder, digest, timeout=30.0):
    """The upload is dropped once the turn has ended, just after its last redraw."""
    deadline = time.monotonic() + timeout
    while digest in _digests(folder):
        assert time.monotonic() < deadline, "the upload was kept"
        time.sleep(0.2)


def test_erasure_reaches_uploads_exports_and_cached_copies(launch_app, page, tmp_path):
    import hashlib

    cache = tmp_path / "gradio"
    app = launch_app("--max-new-tokens-limit", "48", env={"GRADIO_TEMP_DIR": str(cache)})
    _ready(page, app)

    # Without consent the upload is gone once its turn has taken it.
    # JPEGs, so that the uploads' bytes differ from the cleaned PNGs the studio keeps.
    unsaved = _image(tmp_path, "unsaved.jpg", (250, 120, 0))
    submit_question(page, "er: not saved", unsaved)
    _wait_answer(page)
    _wait_gone(cache, hashlib.sha256(unsaved.read_bytes()).hexdigest())

    # A new conversation first: consent keeps the conversation so far, which would be that one.
    start_new_chat(page)
    give_consent(page)
    saved = _image(tmp_path, "saved.jpg", (0, 120, 250))
    submit_question(page, "er: saved then erased", saved)
    page.wait_for_function(
        """selector => [...document.querySelectorAll(selector)]
               .some(row => row.innerText.includes(' tokens · '))""", arg=BOT)
    stored = [row["sha256"] for row in _wait_rows(app, "select sha256 from images")]
    assert len(stored) == 1
    _wait_gone(cache, hashlib.sha256(saved.read_bytes()).hexdigest())

    # The data tab's export and preview hold the data too, until the erasure.
    page.get_by_role("tab", name="Data").click()
    page.locator("#export").click()
    page.locator("#export-file a").first.wait_for(timeout=60_000)
    assert [p for p in _files_under(cache) if p.suffix == ".zip"]

    page.get_by_role("tab", name="Chat").click()
    page.locator(SIDEBAR).click()
    delete_all_data(page, 1)
    for table in ("conversations", "messages", "images"):
        assert _rows(app, f"select * from {table}") == [], table
    assert [p for p in _files_under(cache) if p.suffix == ".zip"] == []
    assert not set(stored) & _digests(cache)
    assert not [p for p in _files_under(cache) if p.name.split(".")[0] in stored]
    assert _files_under(app.db_path.parent / "images") == []
    assert not set(stored) & _digests(app.db_path.parent / "sessions")


def test_erasure_leaves_no_typed_text_in_the_browser(launch_app, page):
    app = launch_app("--max-new-tokens-limit", "48")
    _ready(page, app)
    # What Gradio's run history kept in this browser, had it used the app before that was
    # turned off, goes at the next load.
    page.evaluate("() => localStorage.setItem('gradio:run-history:v2:1', 'bs: from before')")
    _ready(page, app)
    give_consent(page)
    question = "bs: my private words for this browser"
    submit_question(page, question)
    _wait_answer(page)
    assert _wait_rows(app, "select * from messages where text = ?", question)

    page.locator(SIDEBAR).click()
    delete_all_data(page, 1)
    assert _rows(app, "select * from messages") == []
    stored = page.evaluate("""() => Object.fromEntries([localStorage, sessionStorage].flatMap(
        storage => Object.keys(storage).map(key => [key, storage.getItem(key)])))""")
    assert "vqa-studio-client" in stored  # the page's own storage, as the studio uses it
    assert [key for key, value in stored.items()
            if question in (value or "") or "bs: from before" in (value or "")] == []
