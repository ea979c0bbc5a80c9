"""Recognising and recovering from running out of GPU memory.

`is_out_of_memory(error)` says whether a failure was an allocation failure (CUDA's own error,
or the plain RuntimeError that cuBLAS and bitsandbytes kernels raise); `release_memory(error)`
drops what the failed work still references and hands cached blocks back to the driver, so
the next request can run. `OUT_OF_MEMORY_MESSAGE` is what the user is told.
"""

from __future__ import annotations

import gc

OUT_OF_MEMORY_MESSAGE = (
    "The GPU ran out of memory for this request. Try fewer or smaller images, a lower max new "
    "tokens, or a shorter conversation."
)


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
