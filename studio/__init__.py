"""The studio's flows, in plain Python: a turn, regenerate and edit, compare, feedback,
history, consent and erasure (`studio.turns`).

It joins an `Engine` (engine/) and a `Store` (storage/) for one visitor's `ChatState`. It knows
no Gradio and no torch: the page (ui/) calls it, and so can a test or a script without a
browser.
"""
