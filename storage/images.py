"""The content-addressed image folder.

An image lives at <root>/<first two hex digits>/<sha256>.<ext>, where the sha256 is of the
bytes as given (already cleaned) and the extension follows the format. Files are written to a
temporary name and renamed into place, so a reader never sees half an image, and are never
changed afterwards: the folder can be copied or rsynced at any time. Which files are still
wanted is the database's business (the `images` table); this module only names, writes and
removes files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tiff"}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_sha256(value: str) -> bool:
    return bool(_SHA256.fullmatch(value))


def extension(image_format: str) -> str:
    name = image_format.upper()
    if name in _EXTENSIONS:
        return _EXTENSIONS[name]
    if not name.isalnum():
        raise ValueError(f"unusable image format name {image_format!r}")
    return name.lower()


def image_file(root: Path, sha256: str, image_format: str) -> Path:
    return root / sha256[:2] / f"{sha256}.{extension(image_format)}"


def write_image(root: Path, sha256: str, image_format: str, data: bytes) -> Path:
    """Write the file unless it is already there; returns its path."""
    path = image_file(root, sha256, image_format)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def remove_image(root: Path, sha256: str, image_format: str) -> None:
    path = image_file(root, sha256, image_format)
    path.unlink(missing_ok=True)
    # Fails, harmlessly, while other images still share the folder.
    with contextlib.suppress(OSError):
        path.parent.rmdir()
