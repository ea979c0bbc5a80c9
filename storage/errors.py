"""Errors the store raises on purpose.

`NotFound` covers both "no such row" and "this client key does not own it": a caller cannot
tell a foreign conversation from a missing one, so ids of other users' data leak nothing.
`InvalidRequest` is a call the store refuses (voting on a user message, picking between two
answers to different questions, an empty consent version, ...). `OutOfSpace` is a write the
disk had no room for: it was rolled back, so nothing of it was saved. Messages are short and
safe to show to the user.
"""


class StorageError(Exception):
    """Base class of the errors the store raises on purpose."""


class NotFound(StorageError, LookupError):
    """No such conversation, message or image for this client key."""


class InvalidRequest(StorageError, ValueError):
    """The store refuses the call as made; the message says why."""


class OutOfSpace(StorageError, OSError):
    """The disk (or the database's size limit) is full; the write was rolled back."""
