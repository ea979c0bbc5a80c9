"""Fixtures for the storage tests: a fresh store on a real temporary SQLite file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage import Store


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    opened = Store(tmp_path / "studio.db")
    yield opened
    opened.close()
