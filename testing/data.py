"""Filling a store the way the app fills it: through the real `storage.Store`, on a real file.

- `png_blob(color)`: a small solid PNG, ready for `Store.put_image`.
- `ask(store, key, text, image=...)`: a new consented conversation holding one question.
- `answer(store, key, conversation, question, text)`: a finished generated answer to it.
- `rate_pair(...)`: two answers to one question, the first liked, the second disliked: one DPO
  pair, two KTO examples and one SFT demonstration in every export.
- `fill_colors(store)`: per colour in `COLORS`, a square with a liked answer (its colour), a
  disliked one and a corrected one: data every export format and the trainer can use.

`KEY` and `OTHER_KEY` are two users' client keys; `CONSENT` the consent version given.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from storage import AnswerMeta, AnswerStats, ImageBlob, Store

KEY = "client-key-alice"
OTHER_KEY = "client-key-bob"
CONSENT = "2026-11"
COLORS = {"red": (220, 20, 20), "green": (20, 180, 20), "blue": (20, 20, 220),
          "yellow": (230, 220, 20), "black": (10, 10, 10), "gray": (128, 128, 128),
          "teal": (0, 128, 128), "brown": (140, 80, 20)}


def png_blob(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> ImageBlob:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return ImageBlob(data=buffer.getvalue(), format="PNG", width=size[0], height=size[1])


def ask(store: Store, key: str, text: str, *, image: ImageBlob | None = None,
        title: str = "", consent: str = CONSENT) -> tuple[str, str]:
    """(conversation id, question id) of a new conversation that asks `text`."""
    shas = [store.put_image(image)] if image is not None else []
    conversation = store.create_conversation(key, title, consent_version=consent)
    question = store.add_user_message(key, conversation, text=text, image_shas=shas)
    return conversation, question


def answer(store: Store, key: str, conversation_id: str, question_id: str, text: str, *,
           model_id: str = "tiny/model", stats: AnswerStats | None = None,
           **meta: object) -> str:
    """A finished generated answer to `question_id`; `meta` fills its AnswerMeta."""
    answer_id = store.start_answer(key, conversation_id, parent_id=question_id,
                                   meta=AnswerMeta(model_id=model_id, **meta))
    finished = store.finish_answer(
        answer_id, text=text, stats=stats or AnswerStats(answer_tokens=len(text.split())))
    assert finished, "the answer was already finished"
    return answer_id


def rate_pair(store: Store, key: str, conversation_id: str, question_id: str, liked: str,
              disliked: str, *, reasons: Sequence[str] = (),
              **meta: object) -> tuple[str, str]:
    """(liked id, disliked id): two answers to one question, and the user's verdict on each."""
    good = answer(store, key, conversation_id, question_id, liked, **meta)
    bad = answer(store, key, conversation_id, question_id, disliked, **meta)
    store.add_feedback(key, good, "like")
    store.add_feedback(key, bad, "dislike", reasons=list(reasons))
    return good, bad


def fill_colors(store: Store, colors: dict[str, tuple[int, int, int]] | None = None, *,
                key: str = KEY, consent: str = CONSENT) -> None:
    """Per colour: "What color is the square?" with a liked answer naming the colour, a
    disliked "purple", and "I cannot tell." corrected to the colour."""
    for name, rgb in (colors or COLORS).items():
        conversation, question = ask(store, key, "What color is the square?",
                                     image=png_blob(rgb, (32, 32)), title=name, consent=consent)
        rate_pair(store, key, conversation, question, name, "purple", model_id="tiny-random")
        wrong = answer(store, key, conversation, question, "I cannot tell.",
                       model_id="tiny-random")
        store.add_edit(key, wrong, name)
