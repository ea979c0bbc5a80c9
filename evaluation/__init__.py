"""Does the model (or a tuned adapter) prefer what users preferred? Evaluation runs.

`evaluation.runs.evaluate(engine, store, ...)` measures the loaded model and each of its
adapters against the stored feedback, on the held-out split by default (the export's split
by conversation, so nothing an adapter was trained on leaks into its score): preference accuracy
on DPO pairs (`evaluation.preference`), answer agreement on accepted answers
(`evaluation.agreement`) and head-to-head counts from users' verdicts on side-by-side
answers (`evaluation.head_to_head`). It returns a `Report` (`evaluation.results`), which
`evaluation.report` prints as tables and `evaluation.runs.store_report` stores;
`evaluation.history` turns stored runs into rows and points for the data tab;
`evaluation.command` is `python app.py evaluate`. The pure metrics are `evaluation.metrics`.

The engine is passed in, never built here: the command gets it from app.py, built from the
app's own settings. Nothing in this package imports Gradio or the UI, and nothing heavy
happens at import.
"""
