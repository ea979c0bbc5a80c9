"""Take the screenshots in docs/ from the real page: `python docs/make_screenshots.py [NAME...]`.

Starts `app.py --model tiny-random` on a free port with a throwaway database, drives it in
Debian's headless Chromium, and writes docs/screenshot-main.png (the consent box above the
chat, a turn with an image, its reasoning shown apart from the answer), docs/screenshot-
compare.png (two answers side by side, then the pick) and docs/screenshot-data.png (the data
tab on what those turns stored). The tiny model's answers are random text; the page around
them is the real one. Then it starts `app.py --model tiny-vqa`, the small model trained on
easy-vqa, and writes docs/screenshot-vqa.png: two questions about an easy-vqa *test* image
(one the model never saw), answered right and liked.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the checkout's `testing` helpers
    sys.path.insert(0, str(ROOT))

from testing.app import running_app  # noqa: E402
from testing.browser import launch_chromium  # noqa: E402


def main(argv: list[str]) -> None:
    """Every screenshot, or those named: main, compare, data (one app run), vqa."""
    from playwright.sync_api import sync_playwright

    wanted = set(argv) or {"main", "compare", "data", "vqa"}
    if wanted & {"main", "compare", "data"}:
        # running_app returns once the model is loaded: on a cold cache the status line first
        # names the family while the checkpoint is still being built, and a question then is
        # refused. The data tab shows what the first two stored.
        with tempfile.TemporaryDirectory() as tmp, running_app(
                Path(tmp), "--max-new-tokens-limit", "160") as server, \
                sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 980})
            page.goto(server.url)
            _main(page)
            _compare(page)
            _data(page)
            browser.close()
    if "vqa" in wanted:
        with tempfile.TemporaryDirectory() as tmp, running_app(
                Path(tmp), model="tiny-vqa") as server, sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 980})
            page.goto(server.url)
            _vqa(page)
            browser.close()


def _shot(page, name: str, height: int | None = None) -> None:
    """The page's top `height` pixels (None: all of it), once its notices are closed."""
    for close in page.locator("[data-testid=toast-close]").all():
        close.click()
    page.wait_for_function("() => !document.querySelector('[data-testid=toast-close]')")
    clip = {"x": 0, "y": 0, "width": 1280, "height": height} if height else None
    page.screenshot(path=str(ROOT / "docs" / f"screenshot-{name}.png"), full_page=True,
                    clip=clip)


def _main(page) -> None:
    """Consent given, an example asked with thinking on, its reasoning opened, then a like."""
    page.get_by_label("Save my data").check()
    page.wait_for_selector("#consent-note:has-text('Saving on')")
    page.get_by_text("How many shapes are there").first.click()
    # The example has filled the box once its image shows there.
    page.locator("#question img").first.wait_for()
    page.locator("#question textarea").press("Enter")
    page.wait_for_selector("#chatbot .bot-row:has-text(' tokens · ')", timeout=120_000)
    page.locator("#chatbot").get_by_text("Thought", exact=True).first.click()
    page.locator("#chatbot button[aria-label=Like]").last.click()
    _shot(page, "main", height=1080)


def _compare(page) -> None:
    page.get_by_label("Think before answering").uncheck()
    page.locator("#question textarea").fill("Which shape is the largest?")
    page.locator("#compare").click()
    page.wait_for_function(
        "() => { const b = document.querySelector('#pick-a'); return b && !b.disabled; }",
        timeout=120_000)
    _shot(page, "compare", height=1370)  # down to the question box
    page.locator("#pick-a").click()
    page.wait_for_selector("#compare-reveal:has-text('Answer A')")


def _data(page) -> None:
    page.get_by_role("tab", name="Data").click()
    page.locator("#data-summary").get_by_text("3 answers").wait_for(timeout=60_000)
    page.locator("#data-by-kind .mark-rect path").first.wait_for(state="attached")
    _shot(page, "data", height=1100)  # the counts, the plots and the export yields


# A red triangle from easy-vqa's test split, and questions as the dataset words them.
VQA_IMAGE = "12.png"
VQA_QUESTIONS = ("what shape is in the image?", "what color is the shape?")


def _vqa(page) -> None:
    """Two questions about one easy-vqa test image, each answer liked."""
    from training.tiny_vqa import easy_vqa_split

    image = next(row.image for row in easy_vqa_split("test")
                 if Path(row.image).name == VQA_IMAGE)
    page.get_by_label("Save my data").check()
    page.wait_for_selector("#consent-note:has-text('Saving on')")
    for number, question in enumerate(VQA_QUESTIONS, start=1):
        if number == 1:
            page.locator("#question input[type=file]").set_input_files(image)
            page.locator("#question img").first.wait_for()
        page.locator("#question textarea").fill(question)
        page.locator("#question textarea").press("Enter")
        page.wait_for_function(
            "n => [...document.querySelectorAll('#chatbot .bot-row')]"
            ".filter(row => row.textContent.includes(' tokens · ')).length >= n",
            arg=number, timeout=120_000)
        page.locator("#chatbot button[aria-label=Like]").last.click()
    _shot(page, "vqa", height=980)


if __name__ == "__main__":
    main(sys.argv[1:])
