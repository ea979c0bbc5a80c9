"""Debian's Chromium as Playwright drives it: headless, offline-quiet, never a downloaded one.

`launch_chromium(playwright)` starts it with `CHROMIUM_ARGS`; callers close it.
`wait_for_model_on_page(page, family)` waits until the open page says its model is loaded, by
the same rule `testing.app.wait_for_model` reads the app's /poll endpoint with.
"""

from __future__ import annotations

from testing.app import loaded_status

CHROMIUM = "/usr/bin/chromium"
# No sandbox (containers lack the namespaces), no GPU, and none of the background calls home
# that would reach for a network the tests do not have.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def wait_for_model_on_page(page, family: str | None = None, timeout_ms: int = 120_000) -> None:
    """Wait until the page's model status line says the model (of `family`) is loaded."""
    from playwright.sync_api import expect

    expect(page.locator("#model-status")).to_contain_text(
        loaded_status(family), timeout=timeout_ms, use_inner_text=True)
