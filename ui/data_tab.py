"""The data tab: what has been collected, what it would train, and the export itself.

Counts of conversations, answers and feedback by kind; feedback over time as plots; how many
examples each export format would yield; a preview of recent preference pairs with their
images; and an export as a zip download. On a public app the tab stays locked until the
admin password is given (`--admin-password` / VQA_STUDIO_ADMIN_PASSWORD); without one
configured, a public app never shows it. Its endpoints are private: no anonymous API caller
can reach them.

An export holds people's words and images, so it must not outlive their erasure: its zip is
written straight into Gradio's cache folder (which serves it without making a copy of its
own), the unzipped files are removed at once, and the zip is removed after
`EXPORT_LIFETIME_S`, after any erasure, and at start-up.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
from pathlib import Path

import gradio as gr
import pandas as pd

from evaluation.history import RUN_COLUMNS, run_points, run_rows
from exports.formats import FORMATS, count_examples, export, preview_pairs
from ui.limits import PasswordGate, client_address
from ui.render import inert_html, safe_markdown

log = logging.getLogger(__name__)
PREVIEW_PAIRS = 5
EXCERPT = 160
EXPORT_LIFETIME_S = 600.0
# Count plots are drawn this tall. Vega-Lite puts about one y tick per 40 px (at most 7 here),
# stepping by 1, 2 or 5 times a power of ten: a count axis reaching at least that many ticks
# therefore steps by whole numbers, and no count comes out as 0.5.
COUNT_PLOT_HEIGHT = 280
COUNT_AXIS_TICKS = 7


class ExportShelf:
    """Where data-tab exports wait to be downloaded, briefly (see the module docstring)."""

    def __init__(self, root: Path, lifetime_s: float = EXPORT_LIFETIME_S) -> None:
        self.root = root
        self.lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self.clear()  # leftovers of an earlier run

    def make(self, store, fmt: str, keep_reasoning: bool):
        """Export `fmt` and zip it; returns (result, zip path)."""
        self.root.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="export-", dir=self.root))
        try:
            result = export(store, fmt, folder / fmt, keep_reasoning=keep_reasoning)
            archive = shutil.make_archive(str(folder / f"vqa-studio-{fmt}"), "zip",
                                          root_dir=folder / fmt)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(folder / fmt, ignore_errors=True)
        timer = threading.Timer(self.lifetime_s, self._remove, [folder])
        timer.daemon = True
        timer.start()
        return result, archive

    def _remove(self, folder: Path) -> None:
        with self._lock:
            shutil.rmtree(folder, ignore_errors=True)

    def clear(self, *_erased) -> None:
        """Remove every export (after an erasure: they may hold the erased data)."""
        with self._lock:
            if self.root.exists():
                for folder in self.root.iterdir():
                    shutil.rmtree(folder, ignore_errors=True)


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"


def summary_markdown(stats) -> str:
    feedback = ", ".join(f"{kind} {count}" for kind, count in sorted(
        stats.feedback_by_kind.items())) or "none yet"
    finishes = ", ".join(f"{reason} {count}" for reason, count in sorted(
        stats.answers_by_finish_reason.items())) or "none yet"
    return (f"**{stats.conversations}** conversations from **{stats.clients}** browsers · "
            f"**{stats.user_messages}** questions · **{stats.answers}** answers · "
            f"**{stats.images}** images\n\n"
            f"Feedback events: {feedback}\n\nAnswers by how they ended: {finishes}")


def feedback_frames(stats) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_day = pd.DataFrame({"day": list(stats.feedback_per_day),
                            "events": list(stats.feedback_per_day.values())})
    by_kind = pd.DataFrame({"kind": list(stats.feedback_by_kind),
                            "events": list(stats.feedback_by_kind.values())})
    return per_day, by_kind


def count_plot(frame: pd.DataFrame, column: str) -> gr.BarPlot:
    """A bar plot update for counts: its axis starts at 0, so a count of 1 is a visible bar
    (Gradio's plots otherwise fit the axis to the values, and equal values draw nothing),
    and it reaches at least `COUNT_AXIS_TICKS`, so its ticks are whole numbers."""
    top = int(frame[column].max()) if len(frame) else 0
    return gr.BarPlot(value=frame, y_lim=[0, max(top, COUNT_AXIS_TICKS)])


def yield_frame(counts: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame({"format": list(counts), "examples": list(counts.values())})


def evaluation_frames(store) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stored evaluation runs as a table (newest first) and as points for a plot."""
    runs = store.list_evaluation_runs()
    table = pd.DataFrame(run_rows(runs), columns=list(RUN_COLUMNS))
    points = pd.DataFrame(run_points(runs),
                          columns=["run", "contender", "preference accuracy"])
    points["run"] = pd.to_datetime(points["run"], utc=True)
    return table, points


def build_data_tab(studio, settings, tab: gr.Tab) -> None:
    """Render the tab's components inside `tab`, refreshing whenever it is selected."""
    store = studio.store
    # A folder per database: Gradio's cache folder is one per machine, and each app clears
    # its shelf at start-up and on erasure, which must not take another app's exports.
    database = str(Path(settings.db_path).resolve())
    shelf = ExportShelf(Path(gr.utils.get_upload_folder()) / "vqa-studio-exports"
                        / hashlib.sha256(database.encode()).hexdigest()[:16])
    if store is not None:
        store.on_erasure(shelf.clear)
    password = getattr(settings, "admin_password", "") or ""
    wait = float(getattr(settings, "password_wait_s", 2))
    gate_keeper = PasswordGate(password, first_wait_s=wait) if password else None
    locked = bool(getattr(settings, "public", False))
    unlocked = gr.State(not locked)

    with gr.Group(visible=locked) as gate:
        if password:
            gr.Markdown("This app is public: the collected data is for its administrators.")
            secret = gr.Textbox(label="Admin password", type="password", elem_id="data-password")
            unlock = gr.Button("Unlock", elem_id="data-unlock")
        else:
            gr.Markdown("The data tab is disabled on a public app until an admin password is "
                        "set (`--admin-password` or `VQA_STUDIO_ADMIN_PASSWORD`).",
                        elem_id="data-disabled")
    with gr.Column(visible=not locked) as content:
        refresh = gr.Button("Refresh", elem_id="data-refresh")
        summary = gr.Markdown(elem_id="data-summary")
        with gr.Row():
            per_day_plot = gr.BarPlot(x="day", y="events", title="Feedback per day",
                                      height=COUNT_PLOT_HEIGHT, elem_id="data-per-day")
            by_kind_plot = gr.BarPlot(x="kind", y="events", title="Feedback by kind",
                                      height=COUNT_PLOT_HEIGHT, elem_id="data-by-kind")
        yields = gr.Dataframe(label="Examples each export format would yield",
                              elem_id="data-yields", interactive=False)
        gr.Markdown("#### Recent preference pairs")
        pairs = gr.Markdown(elem_id="data-pairs")
        # Whole images, not thumbnails cropped to a square: what the model was shown.
        pair_images = gr.Gallery(label="Their images", columns=6, height=160,
                                 object_fit="contain", elem_id="data-pair-images")
        with gr.Row():
            export_format = gr.Dropdown(list(FORMATS), value="swift-dpo", label="Format",
                                        elem_id="export-format")
            keep_reasoning = gr.Checkbox(label="Keep reasoning as <think>…</think>",
                                         value=False)
            run_export = gr.Button("Export", variant="primary", elem_id="export")
        download = gr.File(label="Download", elem_id="export-file")
        gr.Markdown("#### Evaluation runs\n"
                    "Stored by `python app.py evaluate`; see docs/evaluation.md for what the "
                    "numbers mean.")
        eval_runs = gr.Dataframe(label="Stored runs, newest first", elem_id="data-eval-runs",
                                 interactive=False)
        # Points, not lines: a single run must show too.
        eval_plot = gr.ScatterPlot(x="run", y="preference accuracy", color="contender",
                                   y_lim=[0, 1], title="Preference accuracy per run",
                                   elem_id="data-eval-plot")

    def refresh_data(is_unlocked: bool):
        if not is_unlocked or store is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            stats = store.stats()
            per_day, by_kind = feedback_frames(stats)
            counts = count_examples(store)
            preview = preview_pairs(store, PREVIEW_PAIRS)
        except Exception:
            log.exception("data tab refresh failed")
            gr.Warning("Could not read the stored data; the error was logged.")
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        blocks, images = [], []
        for number, pair in enumerate(preview, start=1):
            question = next((t.text for t in reversed(pair.prompt) if t.role == "user"), "")
            blocks.append(
                f"**{number}. {pair.source}** · {pair.decided_at[:16]}  \n"
                f"*Question:* {safe_markdown(_excerpt(question))}  \n"
                f"✅ {safe_markdown(_excerpt(pair.chosen))}  \n"
                f"❌ {safe_markdown(_excerpt(pair.rejected))}")
            images += [(str(store.image_path(sha)), f"pair {number}") for sha in pair.image_shas]
        text = "\n\n".join(blocks) or "No preference pairs yet: like, dislike, edit or compare."
        return (summary_markdown(stats), count_plot(per_day, "events"),
                count_plot(by_kind, "events"), yield_frame(counts), text, images)

    def make_export(is_unlocked: bool, fmt: str, keep: bool):
        if not is_unlocked or store is None:
            return gr.skip()
        try:
            result, archive = shelf.make(store, fmt, bool(keep))
        except Exception as exc:
            log.exception("export failed")
            gr.Warning(inert_html(f"Export failed: {exc}"))
            return None
        gr.Info(f"Exported {result.total} examples.")
        return archive

    def try_unlock(given: str, request: gr.Request):
        # The field is emptied either way: a password does not stay on the page, and a wrong
        # one is typed again from scratch.
        if gate_keeper is None:
            return False, gr.skip(), gr.skip(), ""
        client = client_address(getattr(request, "headers", None),
                                getattr(getattr(request, "client", None), "host", None))
        verdict = gate_keeper.attempt(client, given or "")
        if verdict.ok:
            return True, gr.Group(visible=False), gr.Column(visible=True), ""
        gr.Warning(verdict.message)
        return False, gr.skip(), gr.skip(), ""

    outputs = [summary, per_day_plot, by_kind_plot, yields, pairs, pair_images]
    refresh.click(refresh_data, [unlocked], outputs, api_visibility="private")
    run_export.click(make_export, [unlocked, export_format, keep_reasoning], [download],
                     api_visibility="private")
    if locked and password:
        unlock.click(try_unlock, [secret], [unlocked, gate, content, secret],
                     api_visibility="private").then(
            refresh_data, [unlocked], outputs, api_visibility="private")
    tab.select(refresh_data, [unlocked], outputs, api_visibility="private")

    def refresh_evaluations(is_unlocked: bool):
        if not is_unlocked or store is None:
            return gr.skip(), gr.skip()
        try:
            return evaluation_frames(store)
        except Exception:
            log.exception("reading evaluation runs failed")
            gr.Warning("Could not read the evaluation runs; the error was logged.")
            return gr.skip(), gr.skip()

    eval_outputs = [eval_runs, eval_plot]
    refresh.click(refresh_evaluations, [unlocked], eval_outputs, api_visibility="private")
    tab.select(refresh_evaluations, [unlocked], eval_outputs, api_visibility="private")
    # Unlocking flips the state: show the runs then as well.
    unlocked.change(refresh_evaluations, [unlocked], eval_outputs, api_visibility="private")
