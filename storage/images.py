"""The content-addressed image folder.

An image lives at <root>/<first two hex digits>/<sha256>.<ext>, where the sha256 is of the
bytes as given (already cleaned) and the extension follows the format. Files are written to a
temporary name and renamed into place, so a reader never sees half an image, and are never
changed afterwards: the folder can be copied or rsynced at any time. `copy_verified` copies
one into another such folder the same way, checking the bytes against the name. Which files are
still wanted is the database's business (the `images` table); this module only names, writes,
copies and removes files.
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
# Prefix of the temporary names files are written under before they are renamed into place.
_PARTIAL = ".incoming-"
_CHUNK = 1 << 20


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
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=_PARTIAL)
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


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_verified(source_root: Path, dest_root: Path, sha256: str, image_format: str,
                  verify_existing: bool = True) -> bool:
    """Make dest_root hold the image, whole: kept if already there with the right bytes
    (`verify_existing` False: with the source's size), else copied through a temporary name
    and renamed once its hash checks. True when the image is in place or gone from the source
    (erased meanwhile); False when the source's bytes no longer match their name (nothing is
    written then)."""
    target = image_file(dest_root, sha256, image_format)
    source = image_file(source_root, sha256, image_format)
    if target.exists():
        if verify_existing and file_sha256(target) == sha256:
            return True
        if not verify_existing and source.exists() and (
                target.stat().st_size == source.stat().st_size):
            return True
    try:
        reader = open(source, "rb")  # noqa: SIM115 - closed by the `with` below
    except FileNotFoundError:
        return True
    with reader:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=_PARTIAL)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as writer:
                while chunk := reader.read(_CHUNK):
                    digest.update(chunk)
                    writer.write(chunk)
                writer.flush()
                os.fsync(writer.fileno())
            if digest.hexdigest() != sha256:
                Path(temporary).unlink()
                return False
            os.replace(temporary, target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    return True


def remove_partial_copies(root: Path) -> None:
    """Remove the temporary files a write or copy cut short (a killed process) left behind."""
    if root.is_dir():
        for leftover in root.glob(f"*/{_PARTIAL}*"):
            leftover.unlink(missing_ok=True)


def remove_all_but(root: Path, kept: set[Path]) -> None:
    """Remove every image file under `root` that is not in `kept`."""
    if root.is_dir():
        for path in root.glob("*/*"):
            if path.is_file() and path not in kept:
                path.unlink(missing_ok=True)


def remove_image(root: Path, sha256: str, image_format: str) -> None:
    path = image_file(root, sha256, image_format)
    path.unlink(missing_ok=True)
    # Fails, harmlessly, while other images still share the folder.
    with contextlib.suppress(OSError):
        path.parent.rmdir()
