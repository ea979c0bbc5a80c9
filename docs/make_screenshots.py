"""Take the screenshots in docs/ from the real page: `python docs/make_screenshots.py`.

Starts `app.py --model tiny-random` on a free port with a throwaway database, drives it in
Debian's headless Chromium, and writes docs/screenshot-main.png (a turn with an image and
its collapsible reasoning) and docs/screenshot-compare.png (two answers side by side).
The tiny model's answers are random text; the page around them is the real one.
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


def main() -> None:
    from playwright.sync_api import sync_playwright

    # Waits until the model is loaded: on a cold cache the status line first names the
    # family while the checkpoint is still being built, and a question then is refused.
    with tempfile.TemporaryDirectory() as tmp, running_app(
            Path(tmp), "--max-new-tokens-limit", "160") as server, sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 980})
        page.goto(server.url)
        page.wait_for_selector("#model-status:has-text('qwen3_5')", timeout=120_000)
        page.get_by_text("How many shapes are there").first.click()
        page.locator("#question textarea").press("Enter")
        page.wait_for_selector("#chatbot .bot-row:has-text(' tokens · ')",
                               timeout=120_000)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ROOT / "docs" / "screenshot-main.png"))
        page.get_by_label("Think before answering").uncheck()
        page.locator("#question textarea").fill("Which shape is the largest?")
        page.locator("#compare").click()
        page.wait_for_function(
            "() => { const b = document.querySelector('#pick-a');"
            " return b && !b.disabled; }",
            timeout=120_000)
        page.locator("#compare-a").scroll_into_view_if_needed()
        page.screenshot(path=str(ROOT / "docs" / "screenshot-compare.png"),
                        full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
