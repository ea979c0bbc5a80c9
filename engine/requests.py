"""Refusals every engine makes the same way, before anything is generated or sent.

`check_request` raises a RequestError, with a message for the user, for a request no model
can answer: no question at the end, more images than the model takes, or a seed outside the
range every backend takes. Engines add their own checks (a family that needs an image, an
unknown adapter) after this one.
"""

from __future__ import annotations

from engine.errors import RequestError
from engine.sampling import SEED_RANGE
from engine.types import GenerationRequest


def check_request(request: GenerationRequest, max_images: int) -> int:
    """Raise RequestError when the request cannot be answered; return its image count."""
    image_count = sum(len(m.images) for m in request.messages)
    if image_count > max_images:
        raise RequestError(
            f"This model takes at most {max_images} image{'s' if max_images != 1 else ''} "
            f"per conversation; this one has {image_count}. Start a new conversation for "
            "more images."
        )
    if not request.messages or request.messages[-1].role != "user":
        raise RequestError("There is no question to answer.")
    seed = request.sampling.seed
    if seed is not None and not 0 <= seed < SEED_RANGE:
        raise RequestError(f"The seed must be a whole number from 0 to {SEED_RANGE - 1}, "
                           "or empty for a new sample each time.")
    return image_count
