"""Helpers shared by the storage tests (a module of its own, so tests can import it)."""

from __future__ import annotations

import io

from PIL import Image

from storage import AnswerMeta, AnswerStats, ImageBlob, Store

KEY = "client-key-alice"
OTHER_KEY = "client-key-bob"
CONSENT = "2026-11"


def png_blob(color: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> ImageBlob:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return ImageBlob(data=buffer.getvalue(), format="PNG", width=size[0], height=size[1])


def answer(
    store: Store,
    key: str,
    conversation_id: str,
    question_id: str,
    text: str,
    *,
    model_id: str = "tiny/model",
    **meta: object,
) -> str:
    """A finished generated answer to `question_id`."""
    answer_id = store.start_answer(
        key, conversation_id, parent_id=question_id, meta=AnswerMeta(model_id=model_id, **meta)
    )
    assert store.finish_answer(
        answer_id, text=text, stats=AnswerStats(answer_tokens=len(text.split()))
    )
    return answer_id
