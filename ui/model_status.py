"""The model status line and the controls that depend on the model.

`status_text` says what is loaded (or how far loading has got, or why it failed) as inert
Markdown; `ModelStatus.poll` runs once a second until the model has settled, and then shapes
the thinking, budget, variant and compare-mode controls to what the model can do.
"""

from __future__ import annotations

import gradio as gr

from engine.protocol import Engine
from studio.turns import Studio
from ui.common import NEVER_WAITS
from ui.render import counted, safe_markdown

# What the checkpoint's template does about thinking, by (mode, default).
_THINKING_TEXT = {
    ("switchable", False): "thinks when asked",
    ("switchable", True): "thinks unless told not to",
    ("always", True): "always thinks",
}


def status_text(engine: Engine) -> str:
    # Names come from checkpoints and model servers: untrusted, so shown inert.
    if engine.ready:
        caps = engine.capabilities()
        thinking = _THINKING_TEXT.get((caps.thinking_mode, caps.thinking_default), "can think")
        if not caps.thinking:
            thinking = "no thinking"
        adapters = (f" · adapters: {safe_markdown(', '.join(caps.adapters))}"
                    if caps.adapters else "")
        cost = f" (about {caps.image_tokens} tokens each)" if caps.image_tokens else ""
        return (f"**{safe_markdown(caps.model_id)}** · {safe_markdown(caps.family)} · "
                f"{safe_markdown(caps.quantization)} · {thinking} · "
                f"up to {counted(caps.max_images, 'image')}{cost}"
                f"{adapters}")
    if engine.load_error:
        return (f"⚠️ **The model could not be loaded.** {safe_markdown(engine.load_error)}\n\n"
                # Whatever failed (the model, an adapter, a model server), the message says
                # what; the way on is the same.
                "Fix that and start the app again (`python app.py --help` lists its options); "
                "`python app.py --model tiny-random` tries the app with a tiny model built "
                "here.")
    progress = engine.progress
    text = (f"⏳ Loading **{safe_markdown(str(engine.model_ref))}**: "
            f"{safe_markdown(progress.message)}")
    if progress.bytes_total:
        text += (f" — {progress.bytes_done / 1e9:.2f} / {progress.bytes_total / 1e9:.2f} GB "
                 f"({100 * progress.bytes_done / progress.bytes_total:.0f}%)")
    return text


def model_controls(studio: Studio):
    """Updates for the thinking box, the budget, the variant and the compare mode."""
    engine = studio.engine
    if not engine.ready:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    caps = engine.capabilities()
    modes = studio.compare_modes()
    compare_mode = gr.Radio(choices=[(label, key) for key, label in modes.items()])
    adapter = gr.Dropdown(choices=["Base model", *caps.adapters], visible=bool(caps.adapters))
    if not caps.thinking:
        reason = "This model cannot think before answering."
        return (gr.Checkbox(value=False, interactive=False, info=reason),
                gr.Slider(interactive=False, info=reason), adapter, compare_mode)
    if caps.thinking_mode == "always":
        reason = "This model always thinks before answering; the budget caps its thinking."
        return (gr.Checkbox(value=True, interactive=False, info=reason),
                gr.Slider(interactive=caps.thinking_budget), adapter, compare_mode)
    if not caps.thinking_budget:
        return (gr.Checkbox(interactive=True),
                gr.Slider(interactive=False,
                          info="This engine cannot cap thinking; the budget is not used."),
                adapter, compare_mode)
    return gr.Checkbox(interactive=True), gr.Slider(interactive=True), adapter, compare_mode


class ModelStatus:
    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    # The status line, the timer (stopped once the model has loaded or failed), and the
    # model's controls. A comment, not a docstring: Gradio would show it as the endpoint's
    # description.
    def poll(self):
        engine = self.studio.engine
        settled = engine.ready or bool(engine.load_error)
        return (status_text(engine), gr.Timer(active=not settled),
                *model_controls(self.studio))


def wire(studio: Studio, timer: gr.Timer, status: gr.Markdown, controls: list) -> None:
    """`controls`: the thinking box, the budget, the variant and the compare mode."""
    timer.tick(ModelStatus(studio).poll, None, [status, timer, *controls],
               **NEVER_WAITS)
