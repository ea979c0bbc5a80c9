"""A store full of consented feedback on coloured squares, written through the real Store."""

from __future__ import annotations

import io

from PIL import Image

from storage import AnswerMeta, AnswerStats, ImageBlob, Store

KEY = "trainer-user"
CONSENT = "2026-11"
COLORS = {"red": (220, 20, 20), "green": (20, 180, 20), "blue": (20, 20, 220),
          "yellow": (230, 220, 20), "black": (10, 10, 10), "gray": (128, 128, 128),
          "teal": (0, 128, 128), "brown": (140, 80, 20)}


def png_blob(color: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> ImageBlob:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return ImageBlob(data=buffer.getvalue(), format="PNG", width=size[0], height=size[1])


def _answer(store: Store, conversation: str, question: str, text: str) -> str:
    answer_id = store.start_answer(KEY, conversation, parent_id=question,
                                   meta=AnswerMeta(model_id="tiny-random"))
    store.finish_answer(answer_id, text=text,
                        stats=AnswerStats(answer_tokens=2, finish_reason="stop"))
    return answer_id


def fill_store(store: Store, colors: dict[str, tuple[int, int, int]] | None = None,
               consent: str | None = CONSENT) -> None:
    """Per colour: one question with a liked answer, a disliked one and a correction, so every
    colour yields SFT demonstrations, DPO pairs and KTO labels of both kinds."""
    for name, rgb in (colors or COLORS).items():
        sha = store.put_image(png_blob(rgb))
        conversation = store.create_conversation(KEY, name, consent_version=consent or "x")
        question = store.add_user_message(KEY, conversation, text="What color is the square?",
                                          image_shas=[sha])
        good = _answer(store, conversation, question, name)
        bad = _answer(store, conversation, question, "purple")
        wrong = _answer(store, conversation, question, "I cannot tell.")
        store.add_feedback(KEY, good, "like")
        store.add_feedback(KEY, bad, "dislike")
        store.add_edit(KEY, wrong, name)
