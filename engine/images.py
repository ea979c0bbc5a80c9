"""The one way an image enters the app.

`load_image(source, policy)` takes a path, bytes, a binary file object or a PIL image and
returns a new PIL image that is always mode RGB, upright (EXIF orientation applied), the first
frame of an animation, transparent areas on white, at most `policy.max_pixels` pixels (scaled
down keeping its aspect ratio), and free of metadata (EXIF with GPS, ICC profile, text chunks).
Anything it refuses raises `ImageError` with a message that tells the user what is wrong and
what to do: empty, too large a file, not an allowed format, damaged, too many pixels (checked
from the header, before anything is decoded), too long and thin, an unsupported colour mode.

`encode_png(image)` gives the bytes to store and hash: pixels only, the same bytes for the same
pixels (with a given Pillow build; its zlib decides the exact compression).

Pure Pillow (numpy only for 16-bit and float images); knows nothing of models or storage.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from PIL import Image, ImageOps, UnidentifiedImageError

from engine.errors import ImageError

ImageSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image

_MIB = 1024 * 1024
_WHITE = (255, 255, 255, 255)
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


@dataclass(frozen=True)
class ImagePolicy:
    """Limits for uploaded images; the defaults suit a phone photo and a VLM's pixel budget."""

    # Size of the file itself.
    max_bytes: int = 20 * _MIB
    # Refused before decoding: a tiny file can claim a huge canvas.
    max_pixels_decode: int = 50_000_000
    # What the model gets: larger images are scaled down to this many pixels.
    max_pixels: int = 1_003_520
    # Longer side / shorter side; beyond it the model sees a useless sliver.
    max_aspect_ratio: float = 20.0
    # Pillow format names tried when opening; nothing else is even attempted.
    allowed_formats: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

    def __post_init__(self) -> None:
        if min(self.max_bytes, self.max_pixels_decode, self.max_pixels) < 1:
            raise ValueError("image limits must be positive")
        if self.max_aspect_ratio < 1:
            raise ValueError("max_aspect_ratio must be at least 1")
        formats = tuple(name.upper() for name in self.allowed_formats)
        if not formats:
            raise ValueError("allowed_formats must name at least one format")
        Image.init()
        unknown = [name for name in formats if name not in Image.OPEN]
        if unknown:
            raise ValueError(f"Pillow cannot open these formats: {', '.join(unknown)}")
        object.__setattr__(self, "allowed_formats", formats)


def load_image(source: ImageSource, policy: ImagePolicy | None = None) -> Image.Image:
    """Check, decode and clean one image; raise ImageError with a message for the user.

    A PIL image is used as it is (its current frame) and is not modified; the result is
    always a new image.
    """
    policy = policy or ImagePolicy()
    if isinstance(source, Image.Image):
        return _guarded(lambda: _clean(source, policy, owned=False), policy)
    data = _read_bytes(source, policy)

    def open_and_clean() -> Image.Image:
        with Image.open(io.BytesIO(data), formats=policy.allowed_formats) as opened:
            return _clean(opened, policy, owned=True)

    return _guarded(open_and_clean, policy)


def encode_png(image: Image.Image) -> bytes:
    """PNG bytes of the pixels alone; the same pixels always give the same bytes."""
    if image.mode != "RGB":
        image = _to_rgb(image)
    buffer = io.BytesIO()
    # Saving a fresh image (never the caller's) keeps metadata in `info` out of the file.
    _pixels_only(image).save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _read_bytes(source: ImageSource, policy: ImagePolicy) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as file:
                if os.fstat(file.fileno()).st_size > policy.max_bytes:
                    raise ImageError(_too_large_message(policy))
                data = file.read(policy.max_bytes + 1)
        except FileNotFoundError:
            raise ImageError("The image file could not be found. Please upload it again.") from None
        except OSError as exc:
            raise ImageError("The image file could not be opened. Please upload it again.") from exc
    elif hasattr(source, "read"):
        data = source.read(policy.max_bytes + 1)
        if not isinstance(data, bytes):
            raise TypeError("load_image needs a file opened in binary mode")
    else:
        raise TypeError(f"load_image cannot read a {type(source).__name__}")
    if not data:
        raise ImageError("The image file is empty. Please upload the image again.")
    if len(data) > policy.max_bytes:
        raise ImageError(_too_large_message(policy))
    return data


def _guarded(decode: Callable[[], Image.Image], policy: ImagePolicy) -> Image.Image:
    """Run a Pillow decode, turning every way a bad file can fail into an ImageError."""
    # Pillow only warns about a decompression bomb below twice its own limit; here that is an
    # error too. Warning filters are process-wide: should two loads overlap, the worst case is
    # that this filter outlives the call, which makes bomb warnings errors elsewhere as well.
    # The header check in `_check_dimensions` is the real guard; this catches what it cannot
    # see (a GIF frame larger than its canvas, a TIFF tile).
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            return decode()
        except ImageError:
            raise
        except UnidentifiedImageError:
            raise ImageError(
                "This file is not an image in a supported format. "
                f"Please upload a {_format_list(policy.allowed_formats)} file."
            ) from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            limit = policy.max_pixels_decode
            if Image.MAX_IMAGE_PIXELS is not None:
                limit = min(limit, Image.MAX_IMAGE_PIXELS)
            raise ImageError(
                f"The image has more pixels than the limit of {_megapixels(limit)} megapixels. "
                "Please upload a smaller image."
            ) from exc
        except MemoryError:
            raise
        except Exception as exc:
            # Damaged files surface from Pillow's decoders as OSError, SyntaxError, ValueError,
            # struct.error, EOFError, IndexError and more; to the user they are all one thing.
            raise ImageError(
                "The image could not be read; the file may be damaged or incomplete. "
                "Please save it again as PNG or JPEG and upload that."
            ) from exc


def _clean(image: Image.Image, policy: ImagePolicy, owned: bool) -> Image.Image:
    """The checks and conversions; `owned` is False for a caller's image, left as it is."""
    _check_dimensions(image.size, policy)
    # Pillow opens every format on its first frame (of an animation, of a TIFF's pages), the
    # one kept. Counting frames is left alone: it would read, and bomb-check, all of them.
    if owned:
        target = _fit(image.size, policy.max_pixels)
        if target != image.size:
            # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: far less work for a big
            # photo. Other formats ignore this.
            image.draft(None, target)
    image.load()
    # A GIF whose first frame is larger than its canvas grows while loading.
    _check_dimensions(image.size, policy)
    image = _upright(image)
    image = _to_rgb(image)
    target = _fit(image.size, policy.max_pixels)
    if target != image.size:
        # reducing_gap first shrinks by whole factors, then resamples: as good, much faster.
        image = image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return _pixels_only(image)


def _check_dimensions(size: tuple[int, int], policy: ImagePolicy) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ImageError(
            "The image has no pixels; the file may be damaged. Please upload another image."
        )
    if width * height > policy.max_pixels_decode:
        raise ImageError(
            f"The image is {width} x {height} pixels, more than the limit of "
            f"{_megapixels(policy.max_pixels_decode)} megapixels. Please upload a smaller image."
        )
    if max(width, height) / min(width, height) > policy.max_aspect_ratio:
        raise ImageError(
            f"The image is {width} x {height} pixels, too long and thin to look at (the limit "
            f"is {policy.max_aspect_ratio:g} to 1). Please crop it into parts and upload those."
        )


def _fit(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    """The largest size within max_pixels with the same aspect ratio; never larger than size."""
    width, height = size
    if width * height <= max_pixels:
        return size
    scale = math.sqrt(max_pixels / (width * height))
    new_width = max(1, math.floor(width * scale))
    new_height = max(1, math.floor(height * scale))
    # Floating point can land one pixel over the budget.
    while new_width * new_height > max_pixels:
        if new_width >= new_height:
            new_width -= 1
        else:
            new_height -= 1
    return new_width, new_height


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        # A damaged EXIF block should not cost the user an otherwise good image.
        return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES or image.mode in ("I", "F"):
        image = _to_8bit_gray(image)
    if image.mode == "RGB":
        return image
    try:
        if image.has_transparency_data:
            background = Image.new("RGBA", image.size, _WHITE)
            return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        return image.convert("RGB")
    except ValueError:
        raise ImageError(
            f"This image uses the {image.mode} colour mode, which is not supported. "
            "Please save it as an RGB PNG or JPEG and upload that."
        ) from None


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float grayscale down to 8 bits, never clipping."""
    import numpy as np

    values = np.asarray(image)
    if image.mode in _SIXTEEN_BIT_MODES:
        scaled = values.astype(np.float32) * (255 / 65535)
    else:
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if image.mode == "I" and low >= 0 and high <= 65535:
            # Integer images this wide almost always hold 16-bit samples.
            scaled = values * (255 / 65535)
        elif image.mode == "F" and low >= 0 and high <= 1:
            scaled = values * 255
        elif high > low:
            scaled = (values - low) * (255 / (high - low))
        else:
            scaled = np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _pixels_only(image: Image.Image) -> Image.Image:
    """A fresh RGB image holding only the pixels: no info, EXIF, ICC or file behind it."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return Image.frombytes("RGB", image.size, image.tobytes())


def _too_large_message(policy: ImagePolicy) -> str:
    return (
        f"The image file is larger than the {_format_bytes(policy.max_bytes)} limit. "
        "Please upload a smaller or more compressed image."
    )


def _format_bytes(count: int) -> str:
    if count >= _MIB:
        return f"{count / _MIB:g} MB"
    if count >= 1024:
        return f"{count / 1024:g} KB"
    return f"{count} bytes"


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1_000_000:.3g}"


def _format_list(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
