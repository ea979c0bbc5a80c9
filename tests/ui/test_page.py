"""Every flow of the studio page in headless Chromium, each checked against the SQLite file.

One app serves the module; each test opens a fresh browser context, which is a new browser
profile and so a new client key: tests see only their own conversations.
"""

from __future__ import annotations

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.conftest import rows, wait_rows
from tests.page_actions import (
    SIDEBAR,
    compare_question,
    delete_all_data,
    give_consent,
    open_page,
    set_greedy,
    start_new_chat,
    submit_question,
    wait_for_box,
)

pytestmark = pytest.mark.browser

BOT = "#chatbot .message-row.bot-row"


@pytest.fixture(scope="module")
def app(app_launcher, tmp_path_factory):
    return app_launcher(tmp_path_factory.mktemp("studio"), "--max-new-tokens-limit", "48")


@pytest.fixture
def ready(page, app):
    open_page(page, app)
    page.get_by_label("Think before answering").uncheck()
    return page


_rows = rows
_wait_rows = wait_rows


def _image(tmp_path, name="pic.png", color=(30, 160, 60)):
    path = tmp_path / name
    Image.new("RGB", (96, 64), color).save(path)
    return path


def _ask(page, text, image=None, answers_before=None):
    submit_question(page, text, image)
    _wait_answers(page, (answers_before or 0) + 1)


def _wait_answers(page, count, timeout=90_000):
    page.wait_for_function(
        """([selector, count]) => [...document.querySelectorAll(selector)]
               .filter(row => row.innerText.includes(' tokens · ')).length >= count""",
        arg=[BOT, count], timeout=timeout)


def _answer_id(app, question):
    rows = _wait_rows(app, """select a.id from messages a join messages q on a.parent_id = q.id
                              where q.text = ? and a.status = 'done'""", question)
    return rows[0]["id"]


def test_multi_turn_with_images_in_later_turns(ready, app, tmp_path):
    give_consent(ready)
    _ask(ready, "mt: first question", _image(tmp_path, "a.png"))
    _ask(ready, "mt: second question", _image(tmp_path, "b.png", (200, 40, 40)),
         answers_before=1)
    first = _rows(app, "select * from messages where text = 'mt: first question'")[0]
    second = _rows(app, "select * from messages where text = 'mt: second question'")[0]
    first_answer = _answer_id(app, "mt: first question")
    assert second["parent_id"] == first_answer
    assert second["conversation_id"] == first["conversation_id"]
    images = _rows(app, "select * from message_images where message_id in (?, ?)",
                   first["id"], second["id"])
    assert len(images) == 2


def test_regenerate_keeps_the_old_answer_viewable(ready, app):
    give_consent(ready)
    _ask(ready, "rg: describe")
    ready.locator(BOT).last.hover()
    ready.locator("#chatbot button[aria-label=Retry]").last.click()
    ready.wait_for_selector("#answer-version:has-text('Answer 2 of 2')", timeout=60_000)
    _wait_answers(ready, 1)
    question = _rows(app, "select id from messages where text = 'rg: describe'")[0]["id"]
    answers = _wait_rows(app, "select * from messages where parent_id = ? and status = 'done'",
                         question, count=2)
    assert len(answers) == 2


def test_edit_saves_a_correction(ready, app):
    give_consent(ready)
    _ask(ready, "ed: what is it?")
    original = _answer_id(app, "ed: what is it?")
    ready.locator("#correct").click()
    ready.locator("#answer-editor textarea").fill("A green rectangle.")
    ready.locator("#save-edit").click()
    rows = _wait_rows(app, "select * from messages where origin = 'edit' and corrects_id = ?",
                      original)
    assert rows and rows[0]["text"] == "A green rectangle."
    feedback = _rows(app, "select kind from feedback where message_id = ?", original)
    assert [f["kind"] for f in feedback] == ["edit"]


def test_like_then_dislike_with_reasons(ready, app):
    give_consent(ready)
    _ask(ready, "lk: rate me")
    answer = _answer_id(app, "lk: rate me")
    ready.locator(BOT).last.hover()
    ready.locator("#chatbot button[aria-label=Like]").last.click()
    assert _wait_rows(app, "select * from feedback where message_id = ? and kind = 'like'",
                      answer)
    ready.locator("#chatbot button[aria-label=Dislike]").last.click()
    reasons = ready.locator("#dislike-reasons")
    reasons.wait_for(state="visible")
    reasons.get_by_label("Incomplete").check()
    reasons.get_by_label("Bad format").check()
    ready.locator("#dislike-comment textarea").fill("too short")
    ready.locator("#send-reasons").click()
    rows = _wait_rows(app, """select * from feedback where message_id = ? and kind = 'dislike'
                              and comment is not null""", answer)
    assert rows and "Incomplete" in rows[0]["reasons"] and "Bad format" in rows[0]["reasons"]
    assert rows[0]["comment"] == "too short"


def test_compare_and_pick(ready, app):
    give_consent(ready)
    compare_question(ready, "cp: which is better?")
    ready.locator("#pick-b").click()
    question = _rows(app, "select id from messages where text = 'cp: which is better?'")[0]
    answers = _rows(app, "select * from messages where parent_id = ? order by side",
                    question["id"])
    assert [a["side"] for a in answers] == ["A", "B"]
    rows = _wait_rows(app, "select * from feedback where kind = 'pick' and message_id = ?",
                      answers[1]["id"])
    assert rows[0]["other_message_id"] == answers[0]["id"]
    assert rows[0]["left_message_id"] == answers[0]["id"]
    # The picked answer continues the conversation in the main chat.
    ready.wait_for_selector(f"{BOT}:has-text('tokens')")


def test_history_open_rename_delete(ready, app):
    give_consent(ready)
    _ask(ready, "hs: first conversation")
    start_new_chat(ready)
    _ask(ready, "hs: second conversation")
    ready.locator(SIDEBAR).click()
    sidebar = ready.locator("#sidebar")
    sidebar.get_by_label("hs: second conversation").wait_for()
    sidebar.get_by_label("hs: first conversation").check()
    ready.wait_for_selector("#chatbot :text('hs: first conversation')")
    # "New chat" deselects it in the list, so that the same conversation opens again.
    ready.locator("#new-chat").click()
    ready.wait_for_function("() => !document.querySelector('#chatbot .message-row')")
    ready.wait_for_function("() => !document.querySelector('#conversations input:checked')")
    sidebar.get_by_label("hs: first conversation").check()
    ready.wait_for_selector("#chatbot :text('hs: first conversation')")
    sidebar.locator("#rename-box textarea, #rename-box input").first.fill("Renamed chat")
    ready.locator("#rename").click()
    _wait_rows(app, "select * from conversations where title = 'Renamed chat'")
    sidebar.get_by_label("Renamed chat").wait_for()
    ready.locator("#delete").click()
    # Asked first, with what goes.
    ready.wait_for_selector("#confirm-text:has-text('2 messages')")
    ready.locator("#confirm-delete").click()
    ready.wait_for_function("() => !document.querySelector('#conversations')"
                            ".innerText.includes('Renamed chat')")
    titles = [r["title"] for r in _rows(app, "select title from conversations")]
    assert "Renamed chat" not in titles and "hs: second conversation" in titles


def test_delete_my_data(ready, app, tmp_path):
    give_consent(ready)
    _ask(ready, "dl: remove me", _image(tmp_path, "private.png", (1, 2, 3)))
    ready.locator(SIDEBAR).click()
    ready.locator("#delete-all").click()
    ready.wait_for_selector("#confirm-text:has-text('1 conversation with 2 messages')")
    assert _rows(app, "select * from messages where text = 'dl: remove me'")
    ready.locator("#confirm-delete").click()
    ready.wait_for_selector("#privacy-note:has-text('Deleted 1 conversation,')")
    assert _rows(app, "select * from messages where text = 'dl: remove me'") == []


def test_a_conversation_deleted_in_another_tab_is_said_once_and_the_tab_starts_afresh(
        browser, app):
    """Two tabs of one browser share its data. One deletes it all; the other, still showing
    the conversation, is told so when it asks on, keeps the question in its box, and the
    question then starts a new conversation."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        first, second = context.new_page(), context.new_page()
        open_page(first, app)
        give_consent(first)  # thinking on, as the page starts
        _ask(first, "dt: soon deleted")
        open_page(second, app)
        second.locator(SIDEBAR).click()
        second.locator("#conversations").get_by_text("dt: soon deleted").wait_for()
        delete_all_data(second, 1)
        assert _rows(app, "select * from messages where text like 'dt: %'") == []
        submit_question(first, "dt: asked on")
        first.wait_for_selector(".toast-body:has-text('was deleted')", timeout=30_000)
        wait_for_box(first, "dt: asked on")
        first.wait_for_function("() => !document.querySelector('#chatbot .bot-row')")
        first.locator("#question textarea").press("Enter")
        _wait_answers(first, 1)
        asked = _wait_rows(app, "select text, parent_id from messages where role = 'user'"
                                " and text like 'dt: %'")
        assert [(r["text"], r["parent_id"]) for r in asked] == [("dt: asked on", None)]
    finally:
        context.close()


def test_a_refused_image_shows_a_message_and_stores_nothing(ready, app, tmp_path):
    give_consent(ready)
    fake = tmp_path / "fake.png"
    fake.write_text("this is not a picture")
    box = ready.locator("#question")
    box.locator("input[type=file]").set_input_files(str(fake))
    # The upload has finished when its thumbnail shows in the box (broken, for this file).
    box.locator("img").first.wait_for(timeout=30_000)
    box.locator("textarea").fill("rf: what is this?")
    box.locator("textarea").press("Enter")
    ready.wait_for_selector(".toast-body:has-text('not an image'), "
                            ".toast-body:has-text('could not be read'), "
                            ".toast-body:has-text('damaged')", timeout=30_000)
    # Nothing lost: the question is still in the box, and nothing was stored.
    wait_for_box(ready, "rf: what is this?")
    assert _rows(app, "select * from messages where text = 'rf: what is this?'") == []


def test_nothing_stored_withoutgive_consent(ready, app):
    _ask(ready, "nc: not saved")
    assert _rows(app, "select * from messages where text = 'nc: not saved'") == []


def test_stop_cancels_the_answer(page, app_launcher, tmp_path):
    slow = app_launcher(tmp_path, "--max-new-tokens-limit", "4000")
    open_page(page, slow)
    give_consent(page)
    page.get_by_label("Think before answering").uncheck()
    set_greedy(page)
    page.locator("#question textarea").fill("st: a very long answer")
    page.locator("#question textarea").press("Enter")
    page.wait_for_selector(BOT, timeout=60_000)
    page.locator("#question button[aria-label=Stop]").click()
    rows = _wait_rows(slow, "select * from messages where role = 'assistant' and "
                            "finish_reason = 'cancelled'", timeout=60)
    assert rows and rows[0]["answer_tokens"] < 4000


# Where the keyboard focus is, named for the tests below.
FOCUSED = """() => {
  const e = document.activeElement;
  if (e.closest('#sidebar .sidebar-content')) return 'sidebar';
  if (e.matches('#question textarea')) return 'question';
  if (e.matches('#question button[aria-label=Submit]')) return 'send';
  if (e.matches('#question button[aria-label="Upload a file"]')) return 'upload';
  if (e.closest('#consent')) return 'consent';
  if (e.closest('#thinking')) return 'thinking';
  if (e.closest('#compare')) return 'compare';
  return e.tagName.toLowerCase();
}"""


def test_tab_on_a_fresh_page_reaches_the_question_box_first_then_every_control(browser, app):
    # Under 721 px the page leaves the focus where it is: nothing has it on a fresh load.
    context = browser.new_context(viewport={"width": 720, "height": 900})
    page = context.new_page()
    open_page(page, app)
    # The page's load script has run once the box carries its place in the keyboard order.
    page.wait_for_function("() => document.querySelector('#question textarea').tabIndex > 0")
    assert page.evaluate("() => document.activeElement === document.body")
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED) == "question"
    visited = []
    for _ in range(30):
        page.keyboard.press("Tab")
        visited.append(page.evaluate(FOCUSED))
        if visited[-1] == "compare":
            break
    # The other controls follow in page order; the closed sidebar's stay out of the way.
    for control in ("consent", "upload", "send", "thinking", "compare"):
        assert control in visited, visited
    assert visited.index("consent") < visited.index("send") < visited.index("compare")
    assert "sidebar" not in visited and "question" not in visited
    context.close()



def test_escape_backs_out_of_a_deletion_then_out_of_the_sidebar(ready, app):
    give_consent(ready)
    _ask(ready, "esc: keep me")
    is_open = "() => document.querySelector('#sidebar').closest('.sidebar').classList" \
              ".contains('open')"
    ready.locator(SIDEBAR).click()
    ready.wait_for_function(is_open)
    ready.locator("#delete-all").click()
    expect(ready.locator("#cancel-delete")).to_be_visible()
    ready.keyboard.press("Escape")
    expect(ready.locator("#cancel-delete")).to_be_hidden()
    assert ready.evaluate(is_open)
    ready.keyboard.press("Escape")
    ready.wait_for_function(f"() => !({is_open})()")
    assert ready.evaluate(FOCUSED) == "question"
    # Backing out deleted nothing.
    assert _rows(app, "select * from messages where text = ?", "esc: keep me")


# Every control a finger may aim at, with its size as shown: the part that a box around it
# which hides its overflow cuts off is neither seen nor tapped. The closed sidebar (off
# screen, inert) and hidden controls are left out.
CONTROLS = """() => {
  const selector = 'button, [role=tab], label:has(> input[type=checkbox]), ' +
                   'label:has(> input[type=radio]), footer a, input[type=number]';
  return [...document.querySelectorAll(selector)].flatMap(element => {
    const box = element.getBoundingClientRect();
    if (!box.width || !box.height || box.right <= 0 || element.closest('[inert]')) return [];
    let top = box.top, bottom = box.bottom;
    for (let outer = element.parentElement; outer; outer = outer.parentElement) {
      if (['hidden', 'clip'].includes(getComputedStyle(outer).overflowY)) {
        const edge = outer.getBoundingClientRect();
        top = Math.max(top, edge.top);
        bottom = Math.min(bottom, edge.bottom);
      }
    }
    const text = element.innerText.trim();
    return [{name: element.getAttribute('aria-label') || text.slice(0, 30),
             icon: !text || element.classList.contains('icon-button'),
             width: box.width, height: bottom - top, left: box.left, right: box.right}];
  });
}"""


def test_on_a_phone_every_control_is_finger_sized_and_nothing_overflows(browser, app,
                                                                        tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    open_page(page, app)
    # A message (here: saving on) comes from the bottom, clear of the sidebar's toggle, and
    # its close button is finger-sized too.
    page.get_by_label("Save my data").check()
    close = page.locator(".toast-close").first.bounding_box()
    toggle = page.locator("button[aria-label='Toggle Sidebar']").bounding_box()
    assert close["width"] >= 40 and close["height"] >= 40, close
    assert close["y"] > toggle["y"] + toggle["height"] + 300, (close, toggle)
    # A touch screen has no hover: a picture's remove button, which lies over it, shows.
    page.locator("#question input[type=file]").set_input_files(str(_image(tmp_path)))
    remove = page.locator('#question button[aria-label="Remove file"]')
    assert remove.evaluate("button => getComputedStyle(button).opacity") == "1"
    remove.tap()
    page.locator("#question img").wait_for(state="detached")
    page.get_by_label("Think before answering").uncheck()
    _ask(page, "ph: what is this?")
    page.locator(BOT).last.tap()  # a phone has no hover: a tap shows the message's buttons
    controls = page.evaluate(CONTROLS)
    names = {control["name"] for control in controls}
    # The controls that matter most are there to be measured.
    for name in ("Toggle Sidebar", "Chat", "Data", "Save my data", "Upload a file", "Submit",
                 "Stop", "Like", "Dislike", "Retry", "Copy message", "✎ Correct this answer",
                 "Sampling", "Compare two answers", "Ask and compare", "Two samples"):
        assert any(n.startswith(name) for n in names), (name, sorted(names))
    too_small = [c for c in controls
                 if c["height"] < 40 or (c["icon"] and c["width"] < 40)]
    assert not too_small, too_small
    # Nothing reaches past the screen's edge, and the page does not scroll sideways.
    assert all(c["left"] >= 0 and c["right"] <= 390 for c in controls), controls
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    for element in ("#question", "#chatbot"):
        assert page.locator(element).bounding_box()["width"] <= 390
    # Nothing lies over the title's text, nor, scrolled to the top, over the first message.
    covered = page.evaluate("""() => {
        const box = element => element.getBoundingClientRect();
        const title = document.createRange();
        title.selectNodeContents(document.querySelector('#intro h2'));
        const chat = document.querySelector('#chatbot .bubble-wrap');
        chat.scrollTop = 0;
        return {toggle: box(document.querySelector('button[aria-label="Toggle Sidebar"]')),
                title: title.getBoundingClientRect(),
                toolbar: box(document.querySelector('#chatbot .top-panel')),
                first: box(document.querySelector('#chatbot .message-row'))};
    }""")
    assert covered["title"]["left"] >= covered["toggle"]["right"], covered
    assert covered["first"]["top"] >= covered["toolbar"]["bottom"], covered
    # The settings come before the examples.
    settings = page.locator("#settings-column").bounding_box()
    example = page.get_by_text("How many shapes are there").first.bounding_box()
    assert settings["y"] + settings["height"] <= example["y"]
    context.close()


def test_asking_again_hides_the_tools_under_the_answer_before_the_next_one_starts(page, app):
    open_page(page, app)  # the page's defaults: thinking on
    _ask(page, "tl: first")
    page.locator("#correct").wait_for(state="visible")
    # How many answers the chat shows at the moment the tools go: the echo hides them, so
    # before the new answer's first redraw adds its message.
    page.evaluate("""() => {
        const answers = () => document.querySelectorAll('#chatbot .message-row.bot-row').length;
        const shown = () => {
            const tools = document.querySelector('#answer-tools');
            return !!tools && tools.offsetParent !== null;
        };
        window.answersBefore = answers();
        window.answersWhenHidden = null;
        const observer = new MutationObserver(() => {
            if (!shown()) {
                window.answersWhenHidden = answers();
                observer.disconnect();
            }
        });
        observer.observe(document.body, {subtree: true, childList: true, attributes: true});
    }""")
    submit_question(page, "tl: second")
    _wait_answers(page, 2)
    before, when_hidden = page.evaluate("() => [window.answersBefore, window.answersWhenHidden]")
    assert when_hidden == before
    page.locator("#correct").wait_for(state="visible")  # back under the finished answer
