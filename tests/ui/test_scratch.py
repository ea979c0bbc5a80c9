"""A session's images live on disk, not in its state, and go with the session or an erasure.

The real tiny engine, a real SQLite file and a real scratch folder."""

from __future__ import annotations

import os
import time

import pytest
from PIL import Image

from engine.types import Sampling
from storage import Store
from studio.turns import SCRATCH_MAX_AGE_S, ChatState, Studio, TurnOptions

FAST = TurnOptions(sampling=Sampling(max_new_tokens=4, temperature=0.0, seed=1))


@pytest.fixture
def studio(tiny_engine, tmp_path):
    with Store(tmp_path / "studio.db") as store:
        studio = Studio(tiny_engine, store)
        studio.use_scratch(tmp_path / "sessions")
        yield studio


def _photo(tmp_path, name, color):
    path = tmp_path / name
    Image.new("RGB", (64, 48), color).save(path)
    return str(path)


def test_images_are_kept_on_disk_and_read_back_for_the_next_turn(studio, tmp_path):
    state = ChatState()
    state.consented = True
    list(studio.ask(state, "first?", [_photo(tmp_path, "a.png", (200, 0, 0))], FAST,
                    session_key="tab"))
    turn = state.turns[0]
    assert turn.question.images == ()  # nothing decoded is held by the session
    assert [os.path.dirname(p) for p in turn.image_paths] == [
        str(studio.scratch_dir / state.scratch_name)]
    history = state.history()
    assert history[0].images[0].size == (64, 48)
    list(studio.ask(state, "and now?", [], FAST, session_key="tab"))
    assert len(state.turns) == 2

    # Erasing the data removes the session's copy too; closing the tab removes its folder.
    sha = os.path.basename(turn.image_paths[0]).split(".")[0]
    counts = studio.delete_my_data(state)  # the store tells the studio which images went
    assert counts.images == 1
    assert not [p for p in studio.scratch_dir.rglob(f"{sha}.*")]
    list(studio.ask(state, "again", [_photo(tmp_path, "b.png", (0, 0, 200))], FAST,
                    session_key="tab"))
    studio.end_session("tab")
    assert not (studio.scratch_dir / state.scratch_name).exists()


def test_folders_of_sessions_that_never_came_back_are_swept(studio, tmp_path):
    gone, active = ChatState(), ChatState()
    list(studio.ask(gone, "q", [_photo(tmp_path, "c.png", (0, 90, 0))], FAST))
    old = time.time() - SCRATCH_MAX_AGE_S - 60
    os.utime(studio.scratch_dir / gone.scratch_name, (old, old))
    studio._last_sweep = float("-inf")  # the next new image triggers a sweep now
    list(studio.ask(active, "q", [_photo(tmp_path, "d.png", (0, 0, 90))], FAST))
    assert not (studio.scratch_dir / gone.scratch_name).exists()
    assert (studio.scratch_dir / active.scratch_name).exists()
