"""How soon a sent question shows in the chat, in a real browser, against the running app.

The app runs as `python app.py --model PATH` (tiny by default) and headless Chromium (Debian's
/usr/bin/chromium through Playwright) types a question and presses Enter, as a person would.
The page itself takes the times, with `performance.now()`: from the Enter key (a listener on
the question box, in the capture phase) to the first frame where

- "question shown": the question's text is in a user message of the chat;
- "box empty": the question box has been emptied;
- "first answer text": the answer bubble shows text other than the "…" placeholder.

Each repetition is a fresh conversation in the same tab (New conversation), thinking off,
greedy, with "Save my data" ticked so the question is stored as it would be for a user who
consented; the first `--warmup` repetitions are not counted. The target is an echo under
100 ms after send, whatever the model's first-token time.

    python -m bench.echo [--reps 15] [--model tiny|medium]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import (
    load_average,
    median,
    ms,
    percentile,
    pin_threads,
    print_machine,
    print_table,
    running_app,
)
from bench.models import MODELS, model_path
from testing.browser import launch_chromium, wait_for_model_on_page

# Installed before each question: times are kept on `window.__echo` by a MutationObserver.
WATCH = """
(question) => {
  const box = document.querySelector('#question textarea');
  const state = {sent: null, echo: null, cleared: null, answer: null};
  window.__echo = state;
  box.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && state.sent === null) {
      state.sent = performance.now();
    }
  }, {capture: true});
  const check = () => {
    if (state.sent === null) return;
    const now = performance.now();
    const users = [...document.querySelectorAll('#chatbot .user-row')];
    if (state.echo === null && users.some(row => row.innerText.includes(question))) {
      state.echo = now;
    }
    if (state.cleared === null && box.value === '') state.cleared = now;
    const bots = [...document.querySelectorAll('#chatbot .bot-row')];
    const last = bots.length ? bots[bots.length - 1].innerText.trim() : '';
    if (state.echo !== null && state.answer === null && last && last !== '…'
        && users.length && bots.length
        && users[users.length - 1].compareDocumentPosition(bots[bots.length - 1])
           & Node.DOCUMENT_POSITION_FOLLOWING) {
      state.answer = now;
    }
  };
  new MutationObserver(check).observe(document.body,
    {subtree: true, childList: true, characterData: true, attributes: true});
}
"""


def measure(url: str, reps: int, warmup: int) -> list[tuple[float, float, float]]:
    """(question shown s, box emptied s, first answer text s) per counted repetition."""
    from playwright.sync_api import sync_playwright

    results = []
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        wait_for_model_on_page(page)
        page.get_by_label("Think before answering").uncheck()
        page.get_by_label("Save my data").check()
        page.wait_for_selector("#consent-note:has-text('Saving on')")
        page.get_by_text("Sampling", exact=True).click()
        temperature = page.locator("#temperature input[type=number]")
        temperature.fill("0")
        temperature.press("Enter")
        for rep in range(warmup + reps):
            question = f"Question {rep}: what is in the picture?"
            box = page.locator("#question textarea")
            box.fill(question)
            page.evaluate(WATCH, question)
            box.press("Enter")
            page.wait_for_function("() => window.__echo.answer !== null", timeout=120_000)
            # The answer must have finished before the next question is sent.
            page.wait_for_function(
                """() => [...document.querySelectorAll('#chatbot .bot-row')]
                         .some(row => row.innerText.includes(' tokens · '))""",
                timeout=120_000)
            times = page.evaluate("() => window.__echo")
            if rep >= warmup:
                results.append(tuple((times[key] - times["sent"]) / 1000
                                     for key in ("echo", "cleared", "answer")))
            page.locator("button[aria-label='Toggle Sidebar']").click()
            page.locator("#new-chat").click()
            page.locator("button[aria-label='Toggle Sidebar']").click()
            page.wait_for_function(
                "() => !document.querySelector('#chatbot .user-row')", timeout=30_000)
        browser.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    pin_threads()
    print_machine("Echo: the question in the chat after Enter")
    with tempfile.TemporaryDirectory() as workdir, running_app(
            model_path(args.model), Path(workdir),
            "--max-new-tokens-limit", str(args.max_new_tokens)) as app:
        results = measure(app.url, args.reps, args.warmup)
    rows = []
    for name, column in (("question shown in the chat", 0), ("question box empty", 1),
                         ("first answer text", 2)):
        values = [result[column] for result in results]
        rows.append([name, ms(median(values)), ms(percentile(values, 95)), ms(max(values))])
    print_table(f"{args.model} model, {len(results)} questions (load average at the end: "
                f"{load_average()})", ["from Enter to", "p50 ms", "p95 ms", "max ms"], rows)


if __name__ == "__main__":
    main()
