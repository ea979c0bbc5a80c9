"""What a person does on the studio page, for the browser tests (Playwright, sync API)."""

from __future__ import annotations

from testing.browser import wait_for_model_on_page

SIDEBAR = "button[aria-label='Toggle Sidebar']"


def open_page(page, app, family: str = "qwen3_5") -> None:
    """Load the page and wait until its status line says the family's model is loaded (a
    question asked while it loads is refused)."""
    page.goto(app.url)
    wait_for_model_on_page(page, family)


def give_consent(page) -> None:
    """Tick "Save my data" above the chat and wait until the page confirms it."""
    page.get_by_label("Save my data").check()
    page.wait_for_selector("#consent-note:has-text('Saving on')")


def start_new_chat(page) -> None:
    """"New chat" from the sidebar, waiting until the server has emptied the chat: the next
    action's event could otherwise reach the server first (both run at once)."""
    page.locator(SIDEBAR).click()
    page.locator("#new-chat").click()
    page.locator(SIDEBAR).click()
    page.wait_for_function("() => !document.querySelector('#chatbot .message-row')")


def open_conversation(page, title: str) -> None:
    """Open a saved conversation from the sidebar's list, waiting until the chat shows it."""
    page.locator(SIDEBAR).click()
    page.locator("#sidebar").get_by_label(title).check()
    page.wait_for_selector(f"#chatbot :text('{title}')")
    page.locator(SIDEBAR).click()


def wait_for_box(page, text: str) -> None:
    """Until the question box holds `text`: a refused question comes back in the update
    after the warning."""
    page.wait_for_function(
        "text => document.querySelector('#question textarea').value === text", arg=text,
        timeout=30_000)


def submit_question(page, text: str, image=None) -> None:
    """Type a question (with an image uploaded first, if given) and press Enter."""
    box = page.locator("#question")
    if image is not None:
        box.locator("input[type=file]").set_input_files(str(image))
        # The upload has finished when its thumbnail shows in the box.
        box.locator("img").first.wait_for(timeout=30_000)
    box.locator("textarea").fill(text)
    box.locator("textarea").press("Enter")


def compare_question(page, text: str) -> None:
    """Type a question and press Compare, waiting until both answers have finished and the
    verdict buttons can be pressed."""
    page.locator("#question textarea").fill(text)
    page.locator("#compare").click()
    page.locator("#pick-a").wait_for(state="visible", timeout=60_000)
    page.wait_for_function("() => !document.querySelector('#pick-a').disabled",
                           timeout=90_000)


def set_greedy(page) -> None:
    """Temperature 0: the tiny model then never ends an answer early, so it streams at length."""
    _set_sampling(page, "temperature", "0")


def set_max_new_tokens(page, count: int) -> None:
    """Set "Max new tokens" in the Sampling settings."""
    _set_sampling(page, "max-new", str(count))


def _set_sampling(page, elem_id: str, value: str) -> None:
    """Type `value` into a slider's number field in the Sampling settings, and close them.

    A value typed in the instant the accordion first opens can be overwritten by the slider's
    initial value (seen about once in twenty runs on a loaded machine, with the field and its
    range both showing the old value afterwards), so the value is typed again until both
    show it once the settings are closed: what they show is what the next event sends."""
    shown = ("id => ['number', 'range'].map(kind => document.querySelector("
             "`#${id} input[type=${kind}]`).value)")
    for _ in range(3):
        page.get_by_text("Sampling", exact=True).click()
        field = page.locator(f"#{elem_id} input[type=number]")
        field.fill(value)
        field.press("Enter")
        page.get_by_text("Sampling", exact=True).click()
        if page.evaluate(shown, elem_id) == [value, value]:
            return
    raise AssertionError(f"the setting #{elem_id} kept {page.evaluate(shown, elem_id)}, "
                         f"not {value}")


def delete_all_data(page, conversations: int) -> None:
    """In the open sidebar, press "Delete my data", confirm, and wait for the page to say so."""
    page.locator("#delete-all").click()
    page.locator("#confirm-delete").click()
    page.wait_for_selector(f"#privacy-note:has-text('Deleted {conversations} conversation')")


def wait_for_finished_answer(page, timeout_ms: int = 120_000) -> None:
    """Wait until an answer in the chat shows its stats line (it has finished streaming)."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('#chatbot .message-row.bot-row')]
               .some(row => row.innerText.includes(' tokens · '))""", timeout=timeout_ms)
