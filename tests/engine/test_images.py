"""load_image / encode_png: every image is checked, cleaned and made RGB the same way.

All test images are made here with Pillow, or by hand where a file must lie about itself.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import random
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, PngImagePlugin

from engine.errors import ImageError
from engine.images import ImagePolicy, encode_png, load_image

DAMAGED = (
    "The image could not be read; the file may be damaged or incomplete. "
    "Please save it again as PNG or JPEG and upload that."
)
NOT_AN_IMAGE = (
    "This file is not an image in a supported format. "
    "Please upload a PNG, JPEG, WEBP, GIF, BMP or TIFF file."
)
EMPTY = "The image file is empty. Please upload the image again."

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encoded(image: Image.Image, format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    return buffer.getvalue()


def two_halves(size: tuple[int, int], left=RED, right=BLUE) -> Image.Image:
    """Left half one colour, right half another: shows rotation and scaling."""
    image = Image.new("RGB", size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG header for a huge RGB canvas, with no pixel data behind it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b""))
        + png_chunk(b"IEND", b"")
    )


def pixel(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return image.getpixel((x, y))


def close_to(actual, expected, tolerance: int = 3) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(actual, expected, strict=True))


# --- refused files -------------------------------------------------------------------------


def test_empty_bytes_are_refused():
    with pytest.raises(ImageError) as refused:
        load_image(b"")
    assert str(refused.value) == EMPTY


def test_zero_byte_file_is_refused(tmp_path: Path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError) as refused:
        load_image(path)
    assert str(refused.value) == EMPTY


def test_missing_file_is_refused(tmp_path: Path):
    with pytest.raises(ImageError) as refused:
        load_image(tmp_path / "gone.png")
    assert str(refused.value) == "The image file could not be found. Please upload it again."


def test_a_directory_is_refused(tmp_path: Path):
    with pytest.raises(ImageError) as refused:
        load_image(tmp_path)
    assert str(refused.value) == "The image file could not be opened. Please upload it again."


@pytest.mark.parametrize("as_source", ["bytes", "path", "file"])
def test_file_larger_than_the_byte_limit_is_refused(tmp_path: Path, as_source: str):
    data = encoded(Image.effect_noise((64, 64), 64).convert("RGB"), "PNG")
    assert len(data) > 2048
    path = tmp_path / "noise.png"
    path.write_bytes(data)
    source = {"bytes": data, "path": str(path), "file": io.BytesIO(data)}[as_source]
    with pytest.raises(ImageError) as refused:
        load_image(source, ImagePolicy(max_bytes=2048))
    assert str(refused.value) == (
        "The image file is larger than the 2 KB limit. "
        "Please upload a smaller or more compressed image."
    )


def test_default_byte_limit_is_twenty_megabytes():
    with pytest.raises(ImageError, match="larger than the 20 MB limit"):
        load_image(b"\0" * (20 * 1024 * 1024 + 1))


def test_text_file_renamed_png_is_refused(tmp_path: Path):
    path = tmp_path / "notes.png"
    path.write_text("these are my notes, not a picture\n")
    with pytest.raises(ImageError) as refused:
        load_image(path)
    assert str(refused.value) == NOT_AN_IMAGE


def test_image_in_a_format_not_allowed_is_refused():
    icon = encoded(Image.new("RGB", (16, 16), RED), "ICO")
    netpbm = encoded(Image.new("RGB", (16, 16), RED), "PPM")
    for data in (icon, netpbm):
        with pytest.raises(ImageError) as refused:
            load_image(data)
        assert str(refused.value) == NOT_AN_IMAGE


def test_allowed_formats_restrict_what_is_even_tried():
    png = encoded(Image.new("RGB", (8, 8), RED), "PNG")
    with pytest.raises(ImageError) as refused:
        load_image(png, ImagePolicy(allowed_formats=("jpeg",)))
    assert str(refused.value) == (
        "This file is not an image in a supported format. Please upload a JPEG file."
    )


@pytest.mark.parametrize("format", ["PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"])
def test_truncated_file_is_refused(format: str):
    data = encoded(Image.effect_noise((64, 64), 64).convert("RGB"), format)
    with pytest.raises(ImageError) as refused:
        load_image(data[: len(data) * 2 // 3])
    assert str(refused.value) == DAMAGED


def test_corrupt_png_data_is_refused():
    data = bytearray(encoded(Image.effect_noise((32, 32), 64).convert("RGB"), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 30] = b"\xff" * 20
    with pytest.raises(ImageError) as refused:
        load_image(bytes(data))
    assert str(refused.value) == DAMAGED


def test_decompression_bomb_is_refused_without_decoding():
    bomb = png_claiming(10_000, 10_000)
    assert len(bomb) < 70
    with pytest.raises(ImageError) as refused:
        load_image(bomb)
    assert str(refused.value) == (
        "The image has more pixels than the limit of 50 megapixels. Please upload a smaller image."
    )


def test_pixel_limit_is_checked_from_the_header_before_decoding():
    # Below Pillow's own bomb limit, so only the header check can refuse it; decoding would
    # have failed on the missing pixel data with a different message.
    with pytest.raises(ImageError) as refused:
        load_image(png_claiming(8_000, 7_000))
    assert str(refused.value) == (
        "The image is 8000 x 7000 pixels, more than the limit of 50 megapixels. "
        "Please upload a smaller image."
    )


def test_pillow_bomb_warning_is_an_error_even_when_the_policy_allows_more():
    with pytest.raises(ImageError) as refused:
        load_image(png_claiming(10_000, 10_000), ImagePolicy(max_pixels_decode=400_000_000))
    assert "more pixels than the limit of 89.5 megapixels" in str(refused.value)
    assert isinstance(refused.value.__cause__, Image.DecompressionBombWarning)


def test_bomb_handling_leaves_global_state_alone():
    filters_before = list(warnings.filters)
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError):
        load_image(png_claiming(10_000, 10_000))
    load_image(encoded(Image.new("RGB", (8, 8)), "PNG"))
    assert warnings.filters == filters_before
    assert limit_before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("size", [(2100, 100), (100, 2100)])
def test_extreme_aspect_ratio_is_refused(size: tuple[int, int]):
    with pytest.raises(ImageError) as refused:
        load_image(encoded(Image.new("RGB", size), "PNG"))
    width, height = size
    assert str(refused.value) == (
        f"The image is {width} x {height} pixels, too long and thin to look at "
        "(the limit is 20 to 1). Please crop it into parts and upload those."
    )


def test_aspect_ratio_at_the_limit_is_accepted():
    assert load_image(encoded(Image.new("RGB", (2000, 100)), "PNG")).size == (2000, 100)


def test_unsupported_colour_mode_is_refused():
    with pytest.raises(ImageError) as refused:
        load_image(Image.new("La", (8, 8)))
    assert str(refused.value) == (
        "This image uses the La colour mode, which is not supported. "
        "Please save it as an RGB PNG or JPEG and upload that."
    )


def test_a_text_stream_or_other_object_is_a_programming_error():
    with pytest.raises(TypeError):
        load_image(io.StringIO("not bytes"))
    with pytest.raises(TypeError):
        load_image(42)


def test_policy_rejects_formats_pillow_cannot_open():
    with pytest.raises(ValueError, match="HEIC"):
        ImagePolicy(allowed_formats=("PNG", "HEIC"))
    assert ImagePolicy(allowed_formats=("png", "Jpeg")).allowed_formats == ("PNG", "JPEG")


# --- conversions ---------------------------------------------------------------------------


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    image.putpixel((1, 0), (255, 0, 0, 255))
    image.putpixel((2, 0), (255, 0, 0, 128))
    result = load_image(encoded(image, "PNG"))
    assert pixel(result, 0, 0) == WHITE
    assert pixel(result, 1, 0) == RED
    assert close_to(pixel(result, 2, 0), (255, 127, 127), tolerance=2)


def test_grayscale_with_alpha_is_composited_on_white():
    image = Image.new("LA", (2, 1), (0, 0))
    image.putpixel((1, 0), (0, 255))
    result = load_image(encoded(image, "PNG"))
    assert pixel(result, 0, 0) == WHITE
    assert pixel(result, 1, 0) == (0, 0, 0)


def test_palette_with_transparent_index_is_composited_on_white():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((1, 0), 1)
    data = encoded(image, "GIF", transparency=0)
    assert Image.open(io.BytesIO(data)).mode == "P"
    result = load_image(data)
    assert pixel(result, 0, 0) == WHITE
    assert pixel(result, 1, 0) == GREEN


def test_palette_without_transparency_keeps_its_colours():
    image = Image.new("RGB", (2, 1), BLUE).quantize(colors=2)
    result = load_image(encoded(image, "PNG"))
    assert pixel(result, 0, 0) == BLUE


def test_grayscale_and_bilevel_become_rgb():
    gray = load_image(encoded(Image.new("L", (2, 2), 77), "PNG"))
    assert pixel(gray, 0, 0) == (77, 77, 77)
    bilevel = load_image(encoded(Image.new("1", (2, 2), 1), "BMP"))
    assert pixel(bilevel, 0, 0) == WHITE


@pytest.mark.parametrize("format", ["PNG", "TIFF"])
def test_sixteen_bit_grayscale_is_scaled_not_clipped(format: str):
    samples = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    data = encoded(Image.fromarray(samples), format)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    result = load_image(data)
    # Clipping would have made 1000 and 32768 white.
    assert [pixel(result, x, 0) for x in range(4)] == [
        (0, 0, 0),
        (4, 4, 4),
        (128, 128, 128),
        WHITE,
    ]


def test_sixteen_bit_gradient_spans_the_full_range():
    gradient = np.linspace(0, 65535, 256).astype(np.uint16).reshape(1, 256).repeat(16, axis=0)
    result = np.asarray(load_image(encoded(Image.fromarray(gradient), "PNG")))
    assert result.max() == 255
    assert result.min() == 0
    assert np.all(np.diff(result[0, :, 0].astype(int)) >= 0)
    assert len(np.unique(result)) > 200


def test_thirty_two_bit_integer_image_is_scaled():
    wide = np.array([[0, 65535]], dtype=np.int32)
    assert [pixel(load_image(Image.fromarray(wide)), x, 0) for x in (0, 1)] == [
        (0, 0, 0),
        WHITE,
    ]
    # Outside the 16-bit range: stretched between its own extremes.
    odd = np.array([[-100_000, 0, 100_000]], dtype=np.int32)
    result = load_image(encoded(Image.fromarray(odd), "TIFF"))
    assert [pixel(result, x, 0)[0] for x in range(3)] == [0, 128, 255]


def test_float_image_is_scaled():
    unit = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    result = load_image(encoded(Image.fromarray(unit), "TIFF"))
    assert [pixel(result, x, 0)[0] for x in range(3)] == [0, 128, 255]


@pytest.mark.parametrize("format", ["JPEG", "TIFF"])
def test_cmyk_becomes_plausible_rgb(format: str):
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # no cyan, full magenta and yellow
    data = encoded(cmyk, format)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    red, green, blue = pixel(load_image(data), 8, 8)
    assert red > 230 and green < 30 and blue < 30


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored sideways: turn 90 degrees clockwise to view
    data = encoded(two_halves((40, 20)), "JPEG", exif=exif, quality=95)
    result = load_image(data)
    assert result.size == (20, 40)
    # The stored left half (red) is on top once upright.
    assert close_to(pixel(result, 10, 5), RED, tolerance=20)
    assert close_to(pixel(result, 10, 35), BLUE, tolerance=20)


def test_exif_orientation_is_applied_when_scaling_down_a_big_jpeg():
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 8  # turn 90 degrees counter-clockwise to view
    data = encoded(two_halves((2400, 1600)), "JPEG", exif=exif, quality=90)
    result = load_image(data, ImagePolicy(max_pixels=6_000))
    width, height = result.size
    assert width * height <= 6_000
    assert abs(height / width - 1.5) < 0.05
    # The stored left half (red) is at the bottom once upright.
    assert close_to(pixel(result, width // 2, height - 5), RED, tolerance=20)
    assert close_to(pixel(result, width // 2, 5), BLUE, tolerance=20)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")
def test_damaged_exif_does_not_cost_the_image():
    data = encoded(Image.new("RGB", (8, 8), RED), "JPEG", exif=b"Exif\x00\x00II*\x00garbage")
    assert close_to(pixel(load_image(data), 4, 4), RED, tolerance=5)


def test_metadata_is_dropped():
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 22.0, 7.0)
    data = encoded(Image.new("RGB", (16, 16), RED), "JPEG", exif=exif)
    original = Image.open(io.BytesIO(data))
    assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the fixture really has GPS

    result = load_image(data)
    assert result.info == {}
    assert not result.getexif()
    stored = encode_png(result)
    assert b"eXIf" not in stored and b"Exif" not in stored
    reopened = Image.open(io.BytesIO(stored))
    assert not reopened.getexif()
    assert "exif" not in reopened.info


def test_png_text_and_icc_profile_are_dropped():
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "taken at home")
    profile = b"\0" * 128  # never interpreted: only carried
    data = encoded(Image.new("RGB", (8, 8), RED), "PNG", pnginfo=text, icc_profile=profile)
    assert b"tEXt" in data and b"iCCP" in data
    result = load_image(data)
    assert result.info == {}
    stored = encode_png(result)
    assert b"tEXt" not in stored and b"iCCP" not in stored


def animation(format: str) -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in (RED, GREEN, BLUE)]
    return encoded(frames[0], format, save_all=True, append_images=frames[1:], duration=100)


@pytest.mark.parametrize("format", ["GIF", "WEBP", "PNG"])
def test_animation_gives_its_first_frame(format: str):
    data = animation(format)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    result = load_image(data)
    assert close_to(pixel(result, 8, 8), RED, tolerance=8)


def test_large_image_is_scaled_to_the_pixel_budget_keeping_aspect():
    result = load_image(encoded(two_halves((2000, 1000)), "PNG"))
    width, height = result.size
    assert width * height <= 1_003_520
    assert width * height > 0.99 * 1_003_520
    assert abs(width / height - 2) < 0.01
    assert pixel(result, 10, 10) == RED
    assert pixel(result, width - 10, 10) == BLUE


def test_small_image_is_not_enlarged():
    assert load_image(encoded(Image.new("RGB", (30, 20)), "PNG")).size == (30, 20)


@pytest.mark.parametrize(
    "mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "I", "F", "CMYK", "YCbCr", "HSV"]
)
def test_result_is_always_a_fresh_plain_rgb_image(mode: str):
    source = Image.new(mode, (12, 8))
    source.info["comment"] = "kept only by the source"
    result = load_image(source)
    assert result.mode == "RGB"
    assert result.info == {}
    assert result is not source
    assert source.mode == mode and source.info == {"comment": "kept only by the source"}


def test_every_kind_of_source_gives_the_same_pixels(tmp_path: Path):
    data = encoded(two_halves((64, 32)), "PNG")
    path = tmp_path / "halves.png"
    path.write_bytes(data)
    sources = [
        data,
        bytearray(data),
        memoryview(data),
        io.BytesIO(data),
        path,
        str(path),
        Image.open(io.BytesIO(data)),
    ]
    reference = encode_png(load_image(data))
    for source in sources:
        assert encode_png(load_image(source)) == reference


def test_the_file_is_closed_after_loading(tmp_path: Path):
    path = tmp_path / "closed.png"
    path.write_bytes(encoded(Image.new("RGB", (8, 8)), "PNG"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = load_image(path)
        gc.collect()  # a file dropped without closing warns when it is collected
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    if os.path.isdir("/proc/self/fd"):  # and none is still held open
        open_paths = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                open_paths.add(os.readlink(f"/proc/self/fd/{fd}"))
        assert str(path) not in open_paths
    assert result.size == (8, 8)


# --- encode_png ----------------------------------------------------------------------------


def test_encode_png_is_deterministic_and_format_independent():
    image = Image.effect_noise((40, 30), 50).convert("RGB")
    from_png = encode_png(load_image(encoded(image, "PNG")))
    from_bmp = encode_png(load_image(encoded(image, "BMP")))
    from_tiff = encode_png(load_image(encoded(image, "TIFF")))
    assert from_png == from_bmp == from_tiff
    assert encode_png(load_image(encoded(image, "PNG"))) == from_png
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(from_png))), np.asarray(image))


def test_encode_png_writes_pixels_only_for_any_image():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    image.info["icc_profile"] = b"\0" * 64
    image.info["transparency"] = 0
    stored = encode_png(image)
    reopened = Image.open(io.BytesIO(stored))
    assert reopened.mode == "RGB"
    assert reopened.info.keys() <= {"dpi"}  # nothing but what Pillow itself reports
    assert b"iCCP" not in stored and b"tRNS" not in stored


# --- fuzzing -------------------------------------------------------------------------------

_SEEDS = {
    format: encoded(two_halves((24, 16)), format)
    for format in ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
}
# A small decode limit keeps mutated headers that claim big canvases cheap to refuse.
_FUZZ_POLICY = ImagePolicy(max_pixels_decode=200_000, max_pixels=10_000)


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few random byte flips, overwrites, cuts, insertions and deletions."""
    mutated = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        where = rng.randrange(len(mutated)) if mutated else 0
        action = rng.choice(["flip", "set", "cut", "insert", "delete"])
        if action == "flip" and mutated:
            mutated[where] ^= 1 << rng.randrange(8)
        elif action == "set" and mutated:
            mutated[where] = rng.choice([0x00, 0xFF, 0x7F, 0x80])
        elif action == "cut":
            del mutated[where:]
        elif action == "insert":
            mutated[where:where] = rng.randbytes(rng.randint(1, 8))
        elif action == "delete":
            del mutated[where : where + rng.randint(1, 8)]
    return bytes(mutated)


def load_mutated(data: bytes) -> None:
    """Either a clean image within the policy comes back or ImageError is raised."""
    try:
        result = load_image(data, _FUZZ_POLICY)
    except ImageError as refused:
        assert str(refused)
        return
    assert result.mode == "RGB"
    assert result.info == {}
    assert result.width * result.height <= _FUZZ_POLICY.max_pixels


# Pillow warns about the damaged metadata it reads past; the files are damaged on purpose.
quiet_tiff_metadata = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")


@quiet_tiff_metadata
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(_SEEDS)), st.randoms(use_true_random=False))
def test_mutated_files_either_load_cleanly_or_raise_image_error(format: str, rng):
    load_mutated(mutate(_SEEDS[format], rng))


@quiet_tiff_metadata
def test_many_mutated_files_either_load_cleanly_or_raise_image_error():
    # A fixed, larger sample: some rarer decoder failures (TypeError, ValueError, SyntaxError)
    # show up only once in a few hundred files.
    rng = random.Random(20240601)
    formats = sorted(_SEEDS)
    for _ in range(3000):
        load_mutated(mutate(_SEEDS[rng.choice(formats)], rng))
