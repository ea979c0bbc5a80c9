"""ThinkingParser: reasoning/answer split of a streamed text, however the stream is cut."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.thinking import ThinkingParser, split_reasoning


def calls(deltas: list[str], **options) -> list[list[tuple[str, str]]]:
    """Feed deltas one by one; return what each call returned, flush last."""
    parser = ThinkingParser(**options)
    returned = [parser.feed(delta) for delta in deltas]
    returned.append(parser.flush())
    return returned


def stream(deltas: list[str], **options) -> list[tuple[str, str]]:
    """Every piece emitted over the stream, flush included."""
    return [piece for pieces in calls(deltas, **options) for piece in pieces]


def joined(pieces: list[tuple[str, str]]) -> tuple[str, str]:
    reasoning = "".join(text for kind, text in pieces if kind == "reasoning")
    answer = "".join(text for kind, text in pieces if kind == "answer")
    return reasoning, answer


def test_tagged_reasoning_then_answer_in_one_delta():
    pieces = stream(["<think>\nLook at the cat.\n</think>\n\nA cat."])
    assert pieces == [("reasoning", "Look at the cat."), ("answer", "A cat.")]


def test_pieces_of_one_kind_are_coalesced_and_empty_ones_dropped():
    parser = ThinkingParser()
    assert parser.feed("<think>a") == [("reasoning", "a")]
    assert parser.feed("") == []
    assert parser.feed("b c</think>x") == [("reasoning", "b c"), ("answer", "x")]
    assert parser.feed("") == []
    assert parser.flush() == []


def test_tags_split_across_deltas_character_by_character():
    text = "<think>why so</think>because"
    assert joined(stream(list(text))) == ("why so", "because")


def test_only_a_possible_tag_beginning_is_held_back():
    parser = ThinkingParser()
    assert parser.feed("<think>step one </") == [("reasoning", "step one")]
    assert parser.in_reasoning
    # "</x" can no longer become "</think>": it is reasoning after all.
    assert parser.feed("x") == [("reasoning", " </x")]
    assert parser.feed(" and <") == [("reasoning", " and")]
    assert parser.feed("/think>") == []
    assert parser.seen_close
    assert not parser.in_reasoning


def test_a_lone_angle_bracket_in_reasoning_is_not_lost():
    assert joined(stream(["<think>a <", "< b", "</think>ok"])) == ("a << b", "ok")


def test_whitespace_after_both_tags_and_before_closing_tag_is_dropped():
    deltas = ["<think>", "\n\n", "  idea", "\n", "\n", "</think>", "\n", "\n", "Answer", "\n"]
    assert joined(stream(deltas)) == ("idea", "Answer\n")


def test_whitespace_inside_reasoning_is_kept():
    assert joined(stream(["<think>one\n\n", "two\n", "</think>3"])) == ("one\n\ntwo", "3")


def test_empty_reasoning_block_gives_no_reasoning_piece():
    assert stream(["<think>\n\n</think>\n\nJust the answer."]) == [("answer", "Just the answer.")]


def test_no_tags_is_all_answer_verbatim():
    deltas = ["  Indented", " start\n", "and more"]
    assert joined(stream(deltas)) == ("", "  Indented start\nand more")


def test_answer_that_starts_like_the_opening_tag_is_released_when_it_diverges():
    parser = ThinkingParser()
    assert parser.feed("<th") == []
    assert parser.feed("ree>") == [("answer", "<three>")]
    assert not parser.in_reasoning
    assert not parser.seen_close


def test_lone_partial_tag_at_end_of_stream_is_answer():
    parser = ThinkingParser()
    assert parser.feed("\n<thi") == []
    assert parser.flush() == [("answer", "\n<thi")]


def test_whitespace_only_stream_gives_nothing():
    assert stream([" \n", "\t"]) == []
    assert stream([" \n"], start_in_reasoning=True) == []


def test_missing_closing_tag_leaves_everything_in_reasoning():
    parser = ThinkingParser()
    assert parser.feed("<think>still thinking </thi") == [("reasoning", "still thinking")]
    assert parser.in_reasoning
    assert parser.flush() == [("reasoning", " </thi")]
    assert not parser.seen_close


def test_template_prefilled_opening_tag():
    parser = ThinkingParser(start_in_reasoning=True)
    assert parser.feed("Hmm, a dog") == [("reasoning", "Hmm, a dog")]
    assert parser.feed(".\n</think>\n\nA dog.") == [("reasoning", "."), ("answer", "A dog.")]


def test_starting_in_reasoning_reports_in_reasoning_before_any_text():
    parser = ThinkingParser(start_in_reasoning=True)
    assert parser.in_reasoning
    assert not parser.seen_close


def test_template_prefilled_opening_tag_repeated_by_the_model_is_swallowed():
    deltas = ["\n<th", "ink>\n", "idea</think>answer"]
    assert joined(stream(deltas, start_in_reasoning=True)) == ("idea", "answer")


def test_starting_in_reasoning_with_an_immediate_closing_tag():
    assert stream(["</think>\n\nNo thoughts."], start_in_reasoning=True) == [
        ("answer", "No thoughts.")
    ]


def test_opening_tag_after_the_start_is_kept_as_text():
    # Inside reasoning a second opening tag is just text too.
    pieces = stream(["<think>a <think> b</think>c"])
    assert joined(pieces) == ("a <think> b", "c")


def test_model_cannot_reenter_reasoning_after_closing():
    pieces = stream(["<think>r</think>x <think>y</think> z"])
    assert joined(pieces) == ("r", "x <think>y</think> z")


def test_opening_tag_after_answer_text_is_answer():
    assert stream(["Sure. <think>no</think>"]) == [("answer", "Sure. <think>no</think>")]


def test_custom_tags():
    pieces = stream(["[R]plan", "[/", "R]done"], open_tag="[R]", close_tag="[/R]")
    assert joined(pieces) == ("plan", "done")


def test_split_reasoning_of_a_whole_text():
    assert split_reasoning("<think> a </think> b") == ("a", "b")
    assert split_reasoning("a</think>b", start_in_reasoning=True) == ("a", "b")
    assert split_reasoning("plain") == ("", "plain")


# Tag fragments, whitespace and ordinary characters make tag boundaries likely.
_alphabet = st.sampled_from(["<think>", "</think>", "<", "</", "think", ">", "\n", " ", "a", "b"])
_texts = st.lists(_alphabet, max_size=30).map("".join)


@st.composite
def text_and_cuts(draw):
    text = draw(_texts)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    deltas = [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return text, deltas


@settings(max_examples=400, deadline=None)
@given(text_and_cuts(), st.booleans())
def test_any_split_gives_the_same_result_as_feeding_whole(case, start_in_reasoning):
    text, deltas = case
    assert "".join(deltas) == text
    whole = stream([text], start_in_reasoning=start_in_reasoning)
    returned = calls(deltas, start_in_reasoning=start_in_reasoning)
    assert joined([piece for pieces in returned for piece in pieces]) == joined(whole)
    # Each call's pieces are coalesced: no empty piece, no two neighbours of one kind.
    for pieces in returned:
        assert all(text for _, text in pieces)
        kinds = [kind for kind, _ in pieces]
        assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False))


@settings(max_examples=200, deadline=None)
@given(text_and_cuts())
def test_nothing_is_invented_or_lost_outside_tags_and_edge_whitespace(case):
    text, deltas = case
    reasoning, answer = joined(stream(deltas))

    # "a" and "b" are never part of a tag or whitespace: all of them come out, in order.
    def letters(value: str) -> str:
        return "".join(char for char in value if char in "ab")

    assert letters(reasoning + answer) == letters(text)


def test_closing_tag_that_repeats_its_own_beginning():
    # "<" and "<<" both begin "<<end>>": the longer ending must be held back.
    deltas = ["<<start>>idea <", "<", "end>>ok"]
    assert joined(stream(deltas, open_tag="<<start>>", close_tag="<<end>>")) == ("idea", "ok")


def test_whether_a_request_thinks_follows_the_template():
    from engine.thinking import thinking_on

    assert thinking_on("always", False) and thinking_on("always", True)
    assert thinking_on("switchable", True) and not thinking_on("switchable", False)
    assert not thinking_on("never", True) and not thinking_on("never", False)


def test_a_spent_budget_cues_an_answer_only_while_tokens_are_left(tiny_engine):
    import queue

    from engine.decoding import AnswerTracker

    def spent_tracker() -> AnswerTracker:
        tracker = AnswerTracker(tiny_engine.processor.tokenizer, queue.Queue().put, prefilled=True,
                                budget=2, started=0.0, eos_ids=tiny_engine.eos_ids())
        for token in tiny_engine.processor.tokenizer("a b", add_special_tokens=False)[
                "input_ids"][:2]:
            tracker.take(token)
        assert tracker.budget_spent
        return tracker

    with_room = spent_tracker()
    cue = with_room.budget_cue(max_new=10)
    assert cue and with_room.budget_exhausted and not with_room.budget_spent
    assert "Time is up" in tiny_engine.processor.tokenizer.decode(cue)
    no_room = spent_tracker()
    assert no_room.budget_cue(max_new=2) == []
    assert no_room.budget_exhausted and not no_room.budget_spent
