"""Recognising and recovering from a failure while generating, out of GPU memory above all.

`is_out_of_memory(error)` says whether a failure was an allocation failure (CUDA's own error,
or the plain RuntimeError that cuBLAS and bitsandbytes kernels raise); `release_memory(error)`
drops what the failed work still references and hands cached blocks back to the driver, so
the next request can run. `failure_message(error)` is what the user is told about any failure
(`OUT_OF_MEMORY_MESSAGE`, a StudioError's own message, or `FAILED_MESSAGE`); it logs the rest
with their tracebacks.
"""

from __future__ import annotations

import gc
import logging

from engine.errors import StudioError

log = logging.getLogger(__name__)

OUT_OF_MEMORY_MESSAGE = (
    "The GPU ran out of memory for this request. Try fewer or smaller images, a lower max new "
    "tokens, or a shorter conversation."
)
FAILED_MESSAGE = "The model failed while answering. The error was logged on the server."


def is_out_of_memory(error: BaseException) -> bool:
    import torch

    # Allocation failures inside cuBLAS or bitsandbytes kernels arrive as plain RuntimeErrors.
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def release_memory(error: BaseException | None = None) -> None:
    """Give back the GPU memory a failed request held."""
    import torch

    # The traceback's frames still reference the request's tensors (inputs, activations, the
    # KV cache); drop them before the allocator is asked to return its cached blocks.
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def failure_message(error: BaseException) -> str:
    """The message for the user about `error`; a bug is logged here with its traceback."""
    if is_out_of_memory(error):
        log.warning("request ran out of GPU memory: %s", error)
        return OUT_OF_MEMORY_MESSAGE
    if isinstance(error, StudioError):
        return str(error)
    log.error("generation failed", exc_info=error)
    return FAILED_MESSAGE
