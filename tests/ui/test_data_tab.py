"""The data tab in headless Chromium, on a store filled through the real storage API."""

from __future__ import annotations

import zipfile

import pytest

from storage import Store
from testing.data import answer, ask, png_blob, rate_pair
from tests.page_actions import open_page

pytestmark = pytest.mark.browser
KEY = "data-tab-client"


def _fill(db_path):
    """One conversation per kind of feedback: an edit, a pick, a like + dislike pair."""
    with Store(db_path) as store:
        for n, color in enumerate(((250, 0, 0), (0, 250, 0), (0, 0, 250))):
            conversation, question = ask(store, KEY, f"question {n}?",
                                         image=png_blob(color, (12, 8)), title=f"c{n}")
            if n == 2:
                rate_pair(store, KEY, conversation, question, f"first answer {n}",
                          f"second answer {n}", reasons=["Incomplete"])
                continue
            first = answer(store, KEY, conversation, question, f"first answer {n}")
            second = answer(store, KEY, conversation, question, f"second answer {n}")
            if n == 0:
                store.add_edit(KEY, first, "the corrected answer")
            else:
                store.add_pick(KEY, second, first, first)


def _open_data_tab(page, app):
    open_page(page, app)
    page.get_by_role("tab", name="Data").click()


def test_counts_pairs_and_export_download(app_launcher, tmp_path, page):
    _fill(tmp_path / "data" / "studio.db")
    app = app_launcher(tmp_path)
    _open_data_tab(page, app)
    summary = page.locator("#data-summary")
    summary.get_by_text("3 conversations").wait_for(timeout=30_000)
    assert "6 answers" in summary.inner_text()
    yields = page.locator("#data-yields").inner_text()
    assert "swift-dpo" in yields and "llamafactory-kto" in yields
    pairs = page.locator("#data-pairs").inner_text()
    # Three DPO pairs: the edit, the pick and the like/dislike siblings.
    assert "the corrected answer" in pairs and "second answer 1" in pairs
    assert pairs.count("✅") == 3
    page.locator("#export").click()
    link = page.locator("#export-file a").first
    link.wait_for(timeout=60_000)
    with page.expect_download() as download_info:
        link.click()
    path = download_info.value.path()
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert "manifest.json" in names
        rows = [line for name in names if name.endswith(".jsonl") and "provenance" not in name
                for line in archive.read(name).decode().splitlines()]
    assert len(rows) == 3
    # Another app on the same machine, with a database of its own, leaves the export be.
    app_launcher(tmp_path / "other")
    with page.expect_download() as download_info:
        link.click()
    assert zipfile.is_zipfile(download_info.value.path())


def test_public_app_without_password_hides_the_data(app_launcher, tmp_path, page):
    _fill(tmp_path / "data" / "studio.db")
    app = app_launcher(tmp_path, "--public")
    _open_data_tab(page, app)
    page.locator("#data-disabled").wait_for()
    assert not page.locator("#data-summary").is_visible()


def test_public_app_unlocks_with_the_password(app_launcher, tmp_path, page):
    _fill(tmp_path / "data" / "studio.db")
    app = app_launcher(tmp_path, "--public", env={"VQA_STUDIO_ADMIN_PASSWORD": "s3cret"})
    _open_data_tab(page, app)
    page.locator("#data-password input").fill("wrong")
    page.locator("#data-unlock").click()
    page.locator(".toast-body:has-text('Wrong password')").wait_for()
    assert not page.locator("#data-summary").is_visible()
    page.locator("#data-password input").fill("s3cret")
    page.locator("#data-unlock").click()
    page.locator("#data-summary").get_by_text("3 conversations").wait_for(timeout=30_000)


def test_data_endpoints_are_not_open_to_api_callers(app_launcher, tmp_path):
    from gradio_client import Client

    app = app_launcher(tmp_path, "--public")
    client = Client(app.url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")
    names = " ".join(list(endpoints.get("named_endpoints", {}))
                     + [str(k) for k in endpoints.get("unnamed_endpoints", {})])
    assert "refresh_data" not in names and "make_export" not in names
    assert "try_unlock" not in names


def _bars_and_ticks(page, plot):
    """The heights of a plot's bars and its y-axis tick labels, once it has drawn its bars."""
    bars = page.locator(f"{plot} .mark-rect path")
    bars.first.wait_for(state="attached", timeout=30_000)
    heights = [bar.bounding_box()["height"] for bar in bars.all()]
    ticks = page.locator(f"{plot} g[aria-label^='Y-axis'] .role-axis-label text").evaluate_all(
        "texts => texts.map(text => text.textContent)")
    return heights, ticks


def test_count_plots_draw_single_events_on_whole_number_axes(app_launcher, tmp_path, page):
    _fill(tmp_path / "data" / "studio.db")  # one event of each kind, four on the day
    app = app_launcher(tmp_path)
    _open_data_tab(page, app)
    page.locator("#data-summary").get_by_text("3 conversations").wait_for(timeout=30_000)
    heights, ticks = _bars_and_ticks(page, "#data-by-kind")
    assert len(heights) == 4 and min(heights) >= 10
    assert ticks and all(tick.isdigit() for tick in ticks), ticks
    heights, ticks = _bars_and_ticks(page, "#data-per-day")
    assert len(heights) == 1 and heights[0] >= 10
    assert ticks and all(tick.isdigit() for tick in ticks), ticks
