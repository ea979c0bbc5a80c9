"""Judgements on the page's default settings (thinking on) land in the SQLite file.

Every flow is driven in headless Chromium the way a person would, then checked against the
database: likes and dislikes on a thinking answer, after Regenerate and after a correction.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.conftest import rows, wait_rows
from tests.page_actions import (
    SIDEBAR,
    compare_question,
    give_consent,
    open_conversation,
    open_page,
    set_greedy,
    set_max_new_tokens,
    start_new_chat,
    submit_question,
)

pytestmark = pytest.mark.browser

BOT = "#chatbot .message-row.bot-row"


@pytest.fixture(scope="module")
def app(app_launcher, tmp_path_factory):
    return app_launcher(tmp_path_factory.mktemp("feedback"), "--max-new-tokens-limit", "48")


_rows = rows
_wait_rows = wait_rows


def _wait_answers(page, count, timeout=90_000):
    page.wait_for_function(
        """([selector, count]) => [...document.querySelectorAll(selector)]
               .filter(row => row.innerText.includes(' tokens · ')).length >= count""",
        arg=[BOT, count], timeout=timeout)


def _current_answer(app, question):
    """The newest finished answer to `question`."""
    rows = _wait_rows(app, """select a.* from messages a join messages q on a.parent_id = q.id
                              where q.text = ? and a.status = 'done' order by a.id desc""",
                      question)
    return rows[0]


def test_like_on_a_thinking_answer_is_stored(page, app):
    open_page(page, app)
    assert page.get_by_label("Think before answering").is_checked()
    give_consent(page)
    submit_question(page, "th: like me")
    _wait_answers(page, 1)
    answer = _current_answer(app, "th: like me")
    assert answer["thinking"] == 1 and answer["reasoning"]
    page.locator(BOT).last.hover()
    page.locator("#chatbot button[aria-label=Like]").last.click()
    rows = _wait_rows(app, "select * from feedback where message_id = ? and kind = 'like'",
                      answer["id"])
    assert rows


def _like_last(page):
    page.locator(BOT).last.hover()
    page.locator("#chatbot button[aria-label=Like]").last.click()


def _toast(page, text):
    page.wait_for_selector(f".toast-body:has-text('{text}')", timeout=30_000)


def _answers(app, question):
    return _rows(app, """select a.* from messages a join messages q on a.parent_id = q.id
                         where q.text = ? and a.status = 'done' order by a.id""", question)


def _no_thumb_pressed(page):
    page.locator(BOT).last.hover()
    page.locator("#chatbot button[aria-label=Like]").last.wait_for()
    assert page.locator("#chatbot button[aria-label=Liked]").count() == 0


def test_each_answer_shows_its_own_vote_across_new_chat_and_reopening(page, app):
    """The server sends the chat's thumbs only when they change; a vote never shows on
    another conversation's answer, and a reopened conversation shows its own."""
    open_page(page, app)
    give_consent(page)  # thinking on, as the page starts
    submit_question(page, "tv: liked")
    _wait_answers(page, 1)
    liked = _current_answer(app, "tv: liked")
    _like_last(page)
    page.locator("#chatbot button[aria-label=Liked]").wait_for(timeout=30_000)
    assert _wait_rows(app, "select * from feedback where message_id = ? and kind = 'like'",
                      liked["id"])
    start_new_chat(page)
    submit_question(page, "tv: after a like")
    _wait_answers(page, 1)
    _no_thumb_pressed(page)
    # Reopened, the liked answer shows its vote; a new conversation after it does not.
    open_conversation(page, "tv: liked")
    page.locator("#chatbot button[aria-label=Liked]").wait_for(timeout=30_000)
    start_new_chat(page)
    submit_question(page, "tv: after reopening")
    _wait_answers(page, 1)
    _no_thumb_pressed(page)
    votes = _rows(app, """select q.text from feedback f join messages a on f.message_id = a.id
                          join messages q on a.parent_id = q.id
                          where q.text like 'tv: %' and f.kind = 'like'""")
    assert [v["text"] for v in votes] == ["tv: liked"]
    # The chat's own bin starts a new chat, and says that it deleted nothing.
    page.locator("#chatbot button[aria-label=Clear]").click()
    _toast(page, "still saved")
    page.wait_for_function("() => !document.querySelector('#chatbot .message-row')")
    assert _rows(app, "select * from conversations where title = 'tv: after reopening'")


def test_two_visitors_at_once_each_see_and_store_only_their_own_votes(browser, app):
    """Each tab keeps the record of the thumbs it shows: one visitor's like never presses a
    thumb on the other's page, and each vote lands on its own visitor's answer."""
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(2)]
    try:
        alice, bob = (context.new_page() for context in contexts)
        for page, question in ((alice, "tw: alice asks"), (bob, "tw: bob asks")):
            open_page(page, app)
            give_consent(page)  # thinking on, as the page starts
            submit_question(page, question)
        for page in (alice, bob):
            _wait_answers(page, 1)
        _like_last(alice)
        alice.locator("#chatbot button[aria-label=Liked]").wait_for(timeout=30_000)
        bob.locator(BOT).last.hover()
        bob.locator("#chatbot button[aria-label=Dislike]").last.click()
        bob.locator("#dislike-reasons").wait_for(state="visible", timeout=30_000)
        bob.locator("#chatbot button[aria-label=Disliked]").wait_for(timeout=30_000)
        # Each asks again: the next answer of each shows no vote, and the other's vote never
        # reaches either page.
        for page, question in ((alice, "tw: alice again"), (bob, "tw: bob again")):
            submit_question(page, question)
        for page in (alice, bob):
            _wait_answers(page, 2)
        assert alice.locator("#chatbot button[aria-label=Liked]").count() == 1
        assert alice.locator("#chatbot button[aria-label=Disliked]").count() == 0
        assert bob.locator("#chatbot button[aria-label=Disliked]").count() == 1
        assert bob.locator("#chatbot button[aria-label=Liked]").count() == 0
        votes = _wait_rows(app, """select q.text, f.kind, f.client_hash as voter,
                                          c.client_hash as owner
                                   from feedback f join messages a on f.message_id = a.id
                                   join messages q on a.parent_id = q.id
                                   join conversations c on c.id = a.conversation_id
                                   where q.text like 'tw: %' order by q.text""", count=2)
        assert [(v["text"], v["kind"]) for v in votes] == [("tw: alice asks", "like"),
                                                            ("tw: bob asks", "dislike")]
        assert all(v["voter"] == v["owner"] for v in votes)
        assert votes[0]["voter"] != votes[1]["voter"]
    finally:
        for context in contexts:
            context.close()


def test_dislike_on_a_thinking_answer_opens_the_reasons_and_stores_them(page, app):
    open_page(page, app)
    give_consent(page)
    submit_question(page, "th: dislike me")
    _wait_answers(page, 1)
    answer = _current_answer(app, "th: dislike me")
    _like_last(page)
    _toast(page, "Thanks for the feedback")
    page.locator("#chatbot button[aria-label=Dislike]").last.click()
    reasons = page.locator("#dislike-reasons")
    reasons.wait_for(state="visible", timeout=30_000)
    reasons.get_by_label("Incomplete").check()
    page.locator("#dislike-comment textarea").fill("stops too early")
    page.locator("#send-reasons").click()
    _toast(page, "your feedback was saved")
    rows = _wait_rows(app, """select * from feedback where message_id = ? and kind = 'dislike'
                              and comment is not null""", answer["id"])
    assert rows and "Incomplete" in rows[0]["reasons"]
    kinds = [r["kind"] for r in _rows(app, "select kind from feedback where message_id = ?"
                                      " order by id", answer["id"])]
    assert kinds == ["like", "dislike", "dislike"]


def _assert_pager_on_one_line(page) -> None:
    """‹ "Answer 2 of 2" › and Correct side by side."""
    boxes = [page.locator(s).bounding_box()
             for s in ("#prev-answer", "#answer-version", "#next-answer", "#correct")]
    middles = [box["y"] + box["height"] / 2 for box in boxes]
    assert max(middles) - min(middles) < 20, boxes


def test_after_regenerate_feedback_lands_on_the_answer_shown(page, app):
    open_page(page, app)
    give_consent(page)
    submit_question(page, "rg2: again")
    _wait_answers(page, 1)
    page.locator(BOT).last.hover()
    page.locator("#chatbot button[aria-label=Retry]").last.click()
    page.wait_for_selector("#answer-version:has-text('Answer 2 of 2')", timeout=90_000)
    _assert_pager_on_one_line(page)
    first, second = _wait_rows(app, """select a.* from messages a join messages q
                                       on a.parent_id = q.id where q.text = 'rg2: again'
                                       and a.status = 'done' order by a.id""", count=2)
    assert first["seed"] is not None and second["seed"] is not None
    _like_last(page)
    assert _wait_rows(app, "select * from feedback where message_id = ? and kind = 'like'",
                      second["id"])
    page.locator("#prev-answer").click()
    page.wait_for_selector("#answer-version:has-text('Answer 1 of 2')")
    page.locator(BOT).last.hover()
    page.locator("#chatbot button[aria-label=Dislike]").last.click()
    page.locator("#dislike-reasons").wait_for(state="visible", timeout=30_000)
    assert _wait_rows(app, "select * from feedback where message_id = ? and kind = 'dislike'",
                      first["id"])
    assert _rows(app, "select * from feedback where message_id = ? and kind = 'dislike'",
                 second["id"]) == []


def test_a_dislikes_reasons_go_to_the_answer_disliked_after_regenerate_and_new_chat(
        page, app):
    """The reasons panel stays open while the user regenerates, or starts a new conversation;
    what is sent from it is about the answer that was disliked."""
    open_page(page, app)
    give_consent(page)  # thinking on, as the page starts
    submit_question(page, "rs: why not")
    _wait_answers(page, 1)
    first = _current_answer(app, "rs: why not")
    page.locator(BOT).last.hover()
    page.locator("#chatbot button[aria-label=Dislike]").last.click()
    reasons = page.locator("#dislike-reasons")
    reasons.wait_for(state="visible", timeout=30_000)
    page.locator(BOT).last.hover()
    page.locator("#chatbot button[aria-label=Retry]").last.click()
    page.wait_for_selector("#answer-version:has-text('Answer 2 of 2')", timeout=90_000)
    second = _current_answer(app, "rs: why not")
    assert second["id"] != first["id"]
    reasons.get_by_label("Incomplete").check()
    page.locator("#dislike-comment textarea").fill("the first one")
    page.locator("#send-reasons").click()
    _toast(page, "your feedback was saved")
    page.locator(BOT).last.hover()
    page.locator("#chatbot button[aria-label=Dislike]").last.click()
    reasons.wait_for(state="visible", timeout=30_000)
    start_new_chat(page)
    reasons.get_by_label("Unsafe").check()
    page.locator("#send-reasons").click()
    rows = _wait_rows(app, """select f.message_id, f.reasons, f.comment from feedback f
                              where f.kind = 'dislike' and f.message_id in (?, ?)
                              order by f.created_at, f.id""", first["id"], second["id"],
                      count=4)
    explained = [(r["message_id"], r["comment"]) for r in rows if r["reasons"]]
    assert [(r["message_id"]) for r in rows] == [first["id"], first["id"], second["id"],
                                                 second["id"]]
    assert explained == [(first["id"], "the first one"), (second["id"], None)]
    assert "Unsafe" in rows[3]["reasons"]


def test_a_correction_is_one_editor_and_one_event_and_can_be_rated(page, app):
    open_page(page, app)
    give_consent(page)
    submit_question(page, "ed2: fix me")
    _wait_answers(page, 1)
    original = _current_answer(app, "ed2: fix me")
    page.locator("#correct").click()
    editor = page.locator("#answer-editor textarea")
    editor.wait_for(state="visible")
    # The editor holds the answer as written, without the stats line.
    assert editor.input_value().strip() == original["text"].strip()
    assert " tokens · " not in editor.input_value()
    assert page.locator("#chatbot textarea").count() == 0
    editor.fill("A green square.")
    page.locator("#save-edit").click()
    _toast(page, "Saved your correction")
    edits = _wait_rows(app, "select * from messages where origin = 'edit' and corrects_id = ?",
                       original["id"])
    assert [e["text"] for e in edits] == ["A green square."]
    assert [r["kind"] for r in _rows(app, "select kind from feedback where message_id = ?",
                                     original["id"])] == ["edit"]
    page.wait_for_selector("#answer-version:has-text('Answer 2 of 2')")
    _like_last(page)
    assert _wait_rows(app, "select * from feedback where message_id = ? and kind = 'like'",
                      edits[0]["id"])


def test_the_editor_goes_with_the_conversation_it_was_opened_in(page, app):
    open_page(page, app)
    page.get_by_label("Think before answering").uncheck()
    submit_question(page, "ed3: leave me")
    _wait_answers(page, 1)
    page.locator("#correct").click()
    editor = page.locator("#answer-editor textarea")
    editor.fill("A correction of an answer left behind.")
    start_new_chat(page)
    editor.wait_for(state="hidden")


def test_compare_with_thinking_off_reveals_the_sides_and_the_pick_can_be_rated(page, app):
    open_page(page, app)
    page.get_by_label("Think before answering").uncheck()
    give_consent(page)
    compare_question(page, "cp2: which one?")
    # The two answers stream side by side above the question box.
    panel, box = (page.locator(s).bounding_box() for s in ("#compare-a", "#question"))
    assert panel["y"] < box["y"]
    a, b = (page.locator(s).bounding_box() for s in ("#compare-a", "#compare-b"))
    assert abs(a["y"] - b["y"]) < 5
    page.locator("#pick-a").click()
    _toast(page, "the left answer was preferred")
    reveal = page.locator("#compare-reveal")
    page.wait_for_selector("#compare-reveal:has-text('Answer A:')", timeout=30_000)
    assert "Sample 1" in reveal.inner_text() and "Sample 2" in reveal.inner_text()
    page.wait_for_function("() => document.querySelector('#pick-b').disabled")
    sides = {r["side"]: r for r in _answers(app, "cp2: which one?")}
    pick = _wait_rows(app, "select * from feedback where kind = 'pick'"
                           " and message_id = ?", sides["A"]["id"])
    assert pick and pick[0]["other_message_id"] == sides["B"]["id"]
    _like_last(page)
    assert _wait_rows(app, "select * from feedback where message_id = ? and kind = 'like'",
                      sides["A"]["id"])


def test_new_conversation_during_compare_leaves_later_questions_working(page, app):
    open_page(page, app)
    page.get_by_label("Think before answering").uncheck()
    give_consent(page)
    page.locator("#question textarea").fill("cp3: interrupted")
    page.locator("#compare").click()
    page.locator("#compare-a").wait_for(state="visible", timeout=60_000)
    start_new_chat(page)
    page.locator("#compare-a").wait_for(state="hidden", timeout=60_000)
    submit_question(page, "cp3: after")
    _wait_answers(page, 1)
    answer = _current_answer(app, "cp3: after")
    assert answer["finish_reason"] in ("stop", "length")
    assert page.locator(".toast-body:has-text('Something went wrong')").count() == 0
    _like_last(page)
    assert _wait_rows(app, "select * from feedback where message_id = ? and kind = 'like'",
                      answer["id"])


def test_consent_is_remembered_after_a_reload_and_feedback_still_lands(page, app):
    open_page(page, app)
    give_consent(page)
    submit_question(page, "rl: before reload")
    _wait_answers(page, 1)
    answer = _current_answer(app, "rl: before reload")
    page.locator(BOT).last.hover()
    page.locator("#chatbot button[aria-label=Dislike]").last.click()
    assert _wait_rows(app, "select * from feedback where message_id = ? and kind = 'dislike'",
                      answer["id"])
    page.reload()
    open_page(page, app)
    assert page.get_by_label("Save my data").is_checked()
    open_conversation(page, "rl: before reload")
    # The stored vote shows on the reopened answer.
    page.locator("#chatbot button[aria-label=Disliked]").wait_for(timeout=30_000)
    _like_last(page)
    assert _wait_rows(app, "select * from feedback where message_id = ? and kind = 'like'",
                      answer["id"])
    submit_question(page, "rl: after reload")
    _wait_answers(page, 2)
    after = _rows(app, "select * from messages where text = 'rl: after reload'")
    assert after and after[0]["parent_id"] == answer["id"]


def test_consent_mid_conversation_keeps_the_whole_conversation(page, app, tmp_path):
    from PIL import Image

    image = tmp_path / "mid.png"
    Image.new("RGB", (96, 64), (10, 90, 200)).save(image)
    open_page(page, app)
    assert page.locator("#consent").is_visible()  # not hidden in the closed sidebar
    submit_question(page, "mc: first", image)
    _wait_answers(page, 1)
    submit_question(page, "mc: second")
    _wait_answers(page, 2)
    assert _rows(app, "select * from messages where text like 'mc:%'") == []
    give_consent(page)
    first = _wait_rows(app, "select * from messages where text = 'mc: first'")[0]
    second = _wait_rows(app, "select * from messages where text = 'mc: second'")[0]
    assert first["parent_id"] is None
    assert _rows(app, "select * from message_images where message_id = ?", first["id"])
    assert second["parent_id"] == _current_answer(app, "mc: first")["id"]
    _like_last(page)
    assert _wait_rows(app, "select * from feedback where message_id = ? and kind = 'like'",
                      _current_answer(app, "mc: second")["id"])


def test_an_untouched_seed_samples_anew_and_is_stored(page, app):
    open_page(page, app)
    page.get_by_label("Think before answering").uncheck()
    give_consent(page)
    page.get_by_text("Sampling", exact=True).click()
    assert page.locator("#seed input, #seed textarea").first.input_value() == ""
    submit_question(page, "sd: sample")
    _wait_answers(page, 1)
    page.locator(BOT).last.hover()
    page.locator("#chatbot button[aria-label=Retry]").last.click()
    page.wait_for_selector("#answer-version:has-text('Answer 2 of 2')", timeout=90_000)
    rows = _wait_rows(app, """select a.seed from messages a join messages q on a.parent_id = q.id
                              where q.text = 'sd: sample' and a.status = 'done'""", count=2)
    seeds = [r["seed"] for r in rows]
    assert None not in seeds and seeds[0] != seeds[1]


def test_feedback_on_a_phone(browser, app):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    try:
        open_page(page, app)
        give_consent(page)
        submit_question(page, "ph: small screen")
        _wait_answers(page, 1)
        answer = _current_answer(app, "ph: small screen")
        _like_last(page)
        assert _wait_rows(app, "select * from feedback where message_id = ?"
                               " and kind = 'like'", answer["id"])
        page.locator("#correct").click()
        page.locator("#answer-editor textarea").fill("Corrected on a phone.")
        # Buttons big enough for a finger, and on the screen.
        for selector in ("#correct", "#save-edit", "#prev-answer, #correct"):
            box = page.locator(selector).first.bounding_box()
            assert box["height"] >= 40 and box["x"] + box["width"] <= 390
        page.locator("#save-edit").click()
        assert _wait_rows(app, "select * from messages where origin = 'edit'"
                               " and corrects_id = ?", answer["id"])
        # ‹ "Answer 2 of 2" › and Correct on one line, as on a wide screen.
        page.wait_for_selector("#answer-version:has-text('Answer 2 of 2')")
        _assert_pager_on_one_line(page)
        # The open sidebar covers the page: choosing a conversation closes it.
        start_new_chat(page)
        page.locator(SIDEBAR).click()
        page.locator("#conversations").get_by_text("ph: small screen").click()
        page.wait_for_function("() => !document.querySelector('#sidebar')"
                               ".closest('.sidebar').classList.contains('open')")
        expect(page.locator("#chatbot")).to_contain_text("Corrected on a phone.")
    finally:
        context.close()


def test_code_in_an_answer_shows_and_copies_as_written(page, app):
    open_page(page, app)
    page.get_by_label("Think before answering").uncheck()
    submit_question(page, "cd: code please")
    _wait_answers(page, 1)
    page.locator("#correct").click()
    page.locator("#answer-editor textarea").fill(
        "Try `a < b && c`:\n\n```python\nif a < b and c & d:\n    print('<b>')\n```\n\n"
        '<img src="http://x.invalid/p.png"> ![pic](http://x.invalid/q.png)')
    page.locator("#save-edit").click()
    page.wait_for_selector("#chatbot pre code", timeout=30_000)
    code = page.locator("#chatbot pre code").last.inner_text()
    assert "if a < b and c & d:" in code and "print('<b>')" in code
    assert page.locator("#chatbot code:has-text('a < b && c')").count() >= 1
    assert page.locator("#chatbot img[src*='x.invalid']").count() == 0
    assert "![pic]" in page.locator(BOT).last.inner_text()


@pytest.fixture(scope="module")
def slow_app(app_launcher, tmp_path_factory):
    """Answers long enough to type, send and stop while they stream."""
    return app_launcher(tmp_path_factory.mktemp("slow"), "--max-new-tokens-limit", "4000")


def test_the_box_stays_the_users_while_an_answer_streams_and_stop_keeps_the_count(
        page, slow_app):
    open_page(page, slow_app)
    page.get_by_label("Think before answering").uncheck()
    give_consent(page)
    set_greedy(page)
    textarea = page.locator("#question textarea")
    submit_question(page, "ec: a long answer")
    # The question is in the chat and the box is empty before the answer is done.
    page.wait_for_selector("#chatbot .user-row:has-text('ec: a long answer')")
    page.wait_for_function("() => document.querySelector('#question textarea').value === ''"
                           " && !document.querySelector('#chatbot .bot-row')?.innerText"
                           ".includes(' tokens · ')", timeout=30_000)
    page.wait_for_function(f"() => document.querySelector('{BOT}')?.innerText.length > 40",
                           timeout=60_000)
    textarea.fill("ec: the next question")
    shown = page.locator(BOT).last.inner_text()
    page.wait_for_function(
        "([sel, n]) => [...document.querySelectorAll(sel)].pop().innerText.length > n + 40",
        arg=[BOT, len(shown)], timeout=60_000)
    assert textarea.input_value() == "ec: the next question"  # not wiped by the redraws
    textarea.press("Enter")
    _toast(page, "An answer is still coming")
    assert textarea.input_value() == "ec: the next question"
    page.locator("#question button[aria-label=Stop]").click()
    page.wait_for_selector(f"{BOT}:has-text('stopped')", timeout=60_000)
    row = _wait_rows(slow_app, "select * from messages where role = 'assistant' and "
                               "finish_reason = 'cancelled'", timeout=60)[0]
    assert 0 < row["answer_tokens"] < 4000
    assert f"{row['answer_tokens']} tokens" in page.locator(BOT).last.inner_text()
    assert _rows(slow_app, "select * from messages where text = 'ec: the next question'") == []
    # Once stopped, the question still in the box can be sent.
    textarea.press("Enter")
    page.wait_for_selector("#chatbot .user-row:has-text('ec: the next question')")


def test_on_a_wide_screen_the_question_box_has_the_focus_once_loaded(page, app):
    page.set_viewport_size({"width": 1280, "height": 720})  # a small laptop's window
    open_page(page, app)
    page.wait_for_function("() => document.activeElement.matches('#question textarea')",
                           timeout=10_000)
    # Taking the focus does not scroll the title, the tabs and "Save my data" away.
    assert page.evaluate("window.scrollY") == 0


def test_history_is_dated_newest_first_and_can_be_filtered(page, app):
    open_page(page, app)
    page.get_by_label("Think before answering").uncheck()
    give_consent(page)
    for question in ("hf: apples", "hf: pears"):
        start_new_chat(page)
        submit_question(page, question)
        page.wait_for_selector(f"#conversations :text('{question}')", timeout=90_000)
    page.locator(SIDEBAR).click()
    labels = page.locator("#conversations label").all_inner_texts()
    assert labels[0].startswith("hf: pears · ") and labels[1].startswith("hf: apples · ")
    page.locator("#history-filter textarea, #history-filter input").first.fill("apple")
    page.wait_for_function(
        "() => !document.querySelector('#conversations').innerText.includes('pears')")
    assert "hf: apples" in page.locator("#conversations").inner_text()
    # Deleting asks first; cancelling keeps everything.
    page.locator("#sidebar").get_by_label("hf: apples").check()
    page.locator("#delete").click()
    page.wait_for_selector("#confirm-text:has-text('hf: apples')")
    page.locator("#cancel-delete").click()
    page.locator("#confirm-text").wait_for(state="hidden")
    assert _rows(app, "select * from conversations where title = 'hf: apples'")
    # Renamed, the list is drawn again with the words still in the filter box.
    page.locator("#rename-box textarea, #rename-box input").first.fill("hf: apple pie")
    page.locator("#rename").click()
    page.wait_for_selector("#conversations :text('hf: apple pie')")
    assert "pears" not in page.locator("#conversations").inner_text()


def test_compare_on_a_phone_is_stacked_and_moving_on_retires_the_verdict(browser, slow_app):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    try:
        open_page(page, slow_app)
        page.get_by_label("Think before answering").uncheck()
        set_greedy(page)  # long answers: each side scrolls in its own box
        set_max_new_tokens(page, 300)
        give_consent(page)
        compare_question(page, "pc: compare on a phone")
        a, b = (page.locator(s).bounding_box() for s in ("#compare-a", "#compare-b"))
        assert b["y"] >= a["y"] + a["height"] - 1  # one above the other
        assert a["x"] + a["width"] <= 390 and b["x"] + b["width"] <= 390
        # Each side as tall as on a wide screen, whatever its length: the verdict buttons
        # follow close below rather than thousands of pixels down.
        assert a["height"] <= 400 and b["height"] <= 400
        assert page.locator("#pick-a").bounding_box()["y"] <= b["y"] + b["height"] + 200
        # Asking on without a verdict: the verdict buttons go, nothing is recorded.
        submit_question(page, "pc: next question")
        page.locator("#pick-a").wait_for(state="hidden", timeout=60_000)
        _wait_answers(page, 2)
        question = _rows(slow_app, "select id from messages where text = ?",
                         "pc: compare on a phone")[0]["id"]
        assert _rows(slow_app, """select f.* from feedback f
                                  join messages m on m.id = f.message_id
                                  where m.parent_id = ?""", question) == []
        follow = _rows(slow_app, "select parent_id from messages where text = ?",
                       "pc: next question")[0]
        sides = {r["id"]: r["side"] for r in _answers(slow_app, "pc: compare on a phone")}
        assert sides.get(follow["parent_id"]) in ("A", "B")
    finally:
        context.close()
