"""Helpers shared by the tests, the benchmarks (bench/) and docs/make_screenshots.py.

Not part of the installed package (pyproject.toml lists the packages it ships). Each module
is one kind of help; only `testing.lora` imports torch when imported:

- `testing.processes`: a free loopback port, stopping a child process, one-thread settings.
- `testing.app`: `python app.py` on a free port with its own database, up and later stopped,
  and the one rule for when its model status line says the model is loaded.
- `testing.serve`: `transformers serve` on a free port, up and later stopped.
- `testing.data`: a store filled with questions, answers and feedback through the real Store.
- `testing.lora`: a real LoRA adapter fitted to one answer on a tiny checkpoint, on CPU.
- `testing.browser`: Debian's Chromium for Playwright, and waiting for the page's model.
- `testing.waiting`: waiting until a condition holds, with a generous bound on a hang.
"""
