"""Who a session is: never a key shared through Gradio's copy of the default state."""

from __future__ import annotations

import copy

from studio.turns import ChatState, new_client_key, usable_client_key


def test_sessions_copied_from_the_default_state_are_different_people():
    default = ChatState()
    first, second = copy.deepcopy(default), copy.deepcopy(default)  # what Gradio does
    assert first.owner() != second.owner()
    assert first.owner() == first.owner()  # stable once made
    assert default.client_key == ""


def test_only_long_random_looking_keys_are_adopted_from_a_browser():
    assert usable_client_key(new_client_key())
    assert usable_client_key("0123456789abcdef0123456789abcdef")  # keys of earlier versions
    for bad in (None, "", "short", "x" * 200, "has spaces in it and is long enough ok",
                {"key": "value"}):
        assert not usable_client_key(bad)
