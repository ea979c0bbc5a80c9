"""Fixtures shared by every test folder: the tiny checkpoints and a loaded engine.

The tiny checkpoints are built once into the cache ($VQA_STUDIO_CACHE or ~/.cache/vqa-studio)
and reused; engines are loaded once per test session. Torch runs on one thread so that two
cores give steady results.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_engine():
    """The default tiny checkpoint (Qwen3.5) loaded through the real loading path."""
    from engine.local import LocalEngine

    engine = LocalEngine("tiny-random", quantize="none", device="cpu")
    engine.load()
    return engine


@pytest.fixture(scope="session")
def llava_engine():
    from engine.local import LocalEngine

    engine = LocalEngine("tiny-random:llava", quantize="none", device="cpu")
    engine.load()
    return engine
