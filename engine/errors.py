"""Errors a user can act on.

Every exception the engine raises on purpose is a `StudioError` whose message says what to do.
The UI shows these messages as they are; any other exception is a bug, logged with its
traceback on the server and shown to the user only as a generic failure.
"""


class StudioError(Exception):
    """Base class: the message is safe and useful to show to the user."""


class ImageError(StudioError):
    """An uploaded image was refused (format, size, corruption, aspect ratio)."""


class ModelNotReady(StudioError):
    """The model is still loading, or failed to load."""


class EngineClosed(ModelNotReady):
    """The engine was closed (the app is stopping, or the model was swapped for another)."""


ENGINE_CLOSED_MESSAGE = ("This model has been shut down: the app is stopping or switching "
                         "models. Reload the page and ask again.")


class ModelLoadError(StudioError):
    """The requested model could not be obtained or loaded."""


class RequestError(StudioError):
    """A request the loaded model cannot serve (too many images, unknown adapter, ...)."""


class EngineBusy(StudioError):
    """Too many requests are waiting for the model."""


class OutOfMemory(StudioError):
    """The accelerator ran out of memory for this request; the next one may work."""


class RemoteError(StudioError):
    """A remote OpenAI-compatible server could not be reached or returned an error."""
