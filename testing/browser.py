"""Debian's Chromium as Playwright drives it: headless, offline-quiet, never a downloaded one.

`launch_chromium(playwright)` starts it with `CHROMIUM_ARGS`; callers close it.
"""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# No sandbox (containers lack the namespaces), no GPU, and none of the background calls home
# that would reach for a network the tests do not have.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
