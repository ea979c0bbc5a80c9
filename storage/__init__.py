"""Keeps what happened: conversations, answers, images and feedback, in SQLite.

`Store` is the one way in; the values it takes and returns are in `storage.records`, the errors
it raises on purpose in `storage.errors`. `storage.export` turns the stored feedback into
training data (import it on its own; its TRL formats need `datasets`). Nothing in this
package knows about models, Gradio or the engine.
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
