"""Keeps what happened: conversations, answers, images and feedback, in SQLite.

`Store` is the one way in; the values it takes and returns are in `storage.records`, the errors
it raises on purpose in `storage.errors`; `storage.judgements` is the one reading of which
judgement is current. Turning the stored feedback into training data is the exports' work
(`exports/`). Nothing in this package knows about models, Gradio or the engine.
"""

from storage.errors import InvalidRequest, NotFound, OutOfSpace, StorageError
from storage.records import (
    AnswerMeta,
    AnswerStats,
    Conversation,
    ConversationSummary,
    ErasureCounts,
    EvaluationRun,
    Feedback,
    ImageBlob,
    ImageInfo,
    StoredMessage,
    StoreStats,
)
from storage.store import Store

__all__ = [
    "AnswerMeta",
    "AnswerStats",
    "Conversation",
    "ConversationSummary",
    "ErasureCounts",
    "EvaluationRun",
    "Feedback",
    "ImageBlob",
    "ImageInfo",
    "InvalidRequest",
    "NotFound",
    "OutOfSpace",
    "Store",
    "StorageError",
    "StoreStats",
    "StoredMessage",
]
