"""Fixtures for the engine tests: tiny checkpoints built once per session into a private cache."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """A cache folder of this session only, so tests see their own builds, not the user's."""
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_cache):
    """Build (once per session) and return the folder of a tiny family's checkpoint."""
    from engine.tiny import ensure_tiny

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = ensure_tiny(family, tiny_cache)
        return built[family]

    return get
