"""Gradio's upload folder, seen from the studio.

Uploads are dropped once their turn has taken them (the studio keeps cleaned copies only while
the session lives, and the store only with consent), except the examples' images; erased
images lose every copy Gradio made of them there.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Uploads:
    def __init__(self, root: Path, keep: set[str]) -> None:
        self.root = root.resolve()
        self.keep = keep  # sha256 of files never dropped: the examples' images

    def discard(self, paths: list[str]) -> None:
        for name in paths:
            path = Path(name).resolve()
            if not path.is_relative_to(self.root) or not path.is_file():
                continue
            try:
                if sha256(path) in self.keep:
                    continue
                path.unlink()
                path.parent.rmdir()  # Gradio gives each upload a folder of its own
            except OSError:
                pass

    def forget(self, shas: list[str]) -> None:
        """Remove files named after erased images (copies Gradio made to serve them)."""
        doomed = set(shas)
        if not doomed:
            return
        for folder, _dirs, names in os.walk(self.root):
            for name in names:
                if name.split(".", 1)[0] in doomed:
                    Path(folder, name).unlink(missing_ok=True)
