"""The studio's flows as plain Python: one turn, regenerate, compare, feedback, history.

`Studio` holds the one engine and the one store (None: store nothing) shared by every
session; `ChatState` is what one browser tab carries. Every flow can be called without a
browser, and the Gradio handlers in `ui/` are thin adapters around them.

One turn (`ask`):
1. every image goes through the engine's safe loader (a refused image stops the turn before
   anything is stored);
2. the engine accepts or refuses the request (model loading, too many images) — again before
   anything is stored;
3. the engine's first event arrives: a request it ended before its first token (busy, a
   failed model server) raises `NotAnswered`, again with nothing stored;
4. with the user's consent, the question and its images are committed while the engine reads
   the prompt, then an answer row is opened beside the first update (neither write delays the
   first token), saved as it streams (about once a second) and closed with its stats;
5. without consent nothing is written anywhere.

A regenerated answer, an edited answer and the two sides of a comparison are siblings under
the same stored question; a turn keeps them all in `versions`, and the one the conversation
continues from (the one shown) is the turn's `answer`.
A stream that is abandoned (the page closed, Stop pressed) still closes its answer row.
`TurnUpdate.take` is the one place the engine's events are added to an answer, both
while it streams and while a stopped one is read to its end.

With a scratch folder (`use_scratch`), a session's images are kept there as cleaned PNGs named
by their sha256, not in memory: a turn holds only their paths and the images are read back
when the conversation is sent to the engine, so an idle session costs a few kilobytes. The
folder of a session goes when the session ends (`end_session`, `drop_state`) or six hours
after its last new image (API clients never say they have gone), and every copy of an erased
image goes with its erasure (`forget_images`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import queue
import random
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from engine.errors import RequestError, StudioError
from engine.images import ImagePolicy, encode_png, load_image
from engine.protocol import Engine
from engine.sampling import SEED_RANGE, pick_seed
from engine.thinking import thinking_on
from engine.types import Event, GenerationRequest, Message, Sampling, Stats
from storage import AnswerMeta, AnswerStats, ErasureCounts, ImageBlob, NotFound, Store

log = logging.getLogger(__name__)

# Bumped whenever the consent text changes, so every stored conversation records what its
# author agreed to.
CONSENT_VERSION = "2026-11-21"
CONSENT_TEXT = (
    "Save my conversations, images and feedback on this server so they can improve the model. "
    "Nothing is saved while this is unticked, and you can delete your data at any time."
)
DISLIKE_REASONS = ("Wrong or hallucinated", "Incomplete", "Unsafe", "Bad format", "Other")
TITLE_LENGTH = 60
# A session folder untouched this long belongs to a session that will not come back (an API
# client never says it has gone): it is removed, checked at most every SWEEP_EVERY_S.
SCRATCH_MAX_AGE_S = 6 * 3600
SWEEP_EVERY_S = 600
# How long leaving a conversation waits for its answers to stop: the engine stops a request
# at its next token, so this is only reached by an engine that does not answer at all.
STOP_WAIT_S = 10.0
NO_CONSENT_FEEDBACK = "Feedback is only kept when “Save my data” is ticked."
CONVERSATION_GONE = ("This conversation was deleted, perhaps in another tab. Anything you "
                     "were sending is still in its box: send it again to start a new one.")
JUDGED_GONE = ("This conversation was deleted, perhaps in another tab, so this was not "
               "recorded. Ask a question to start a new one.")

# A browser's key is a random bearer credential: whoever holds it is that person, and the
# store keeps only its sha256. Keys made by earlier versions (32 hex digits) still qualify.
CLIENT_KEY = re.compile(r"[A-Za-z0-9_-]{32,128}")

CompareMode = Literal["samples", "thinking", "adapter"]
Verdict = Literal["A", "B", "tie", "both_bad"]


class ConversationGone(RequestError):
    """The tab's conversation was deleted meanwhile (by another tab of the same browser);
    the tab has left it and shows an empty chat."""


class NotAnswered(StudioError):
    """The engine ended the request before its first token (it is busy, or its server
    failed); nothing of it stays stored. The message is the engine's."""


@dataclass
class TurnOptions:
    thinking: bool = False
    thinking_budget: int | None = None
    sampling: Sampling = field(default_factory=Sampling)
    adapter: str | None = None


@dataclass
class TurnUpdate:
    """One answer as it streams, and when done."""

    answer: str = ""
    reasoning: str = ""
    # Seconds spent reasoning so far (or in total, once the answer started).
    reasoning_seconds: float | None = None
    reasoning_done: bool = False
    done: bool = False
    stats: Stats | None = None
    error: str | None = None
    answer_id: str | None = None
    model: str = ""
    adapter: str | None = None
    label: str = ""
    # The user's current vote on it ("like", "dislike"), shown on its thumbs.
    vote: str | None = None
    # How it was asked for, so that it can be stored later if consent comes mid-conversation.
    request: GenerationRequest | None = None
    # For a correction: the answer it corrects.
    corrects: TurnUpdate | None = None

    def take(self, event: Event) -> None:
        """Add one engine event: a piece of reasoning or of the answer, or the end with its
        stats and error. How long the reasoning took is the streaming side's to time."""
        if event.kind == "reasoning":
            self.reasoning += valid_text(event.text)
        elif event.kind == "answer":
            self.reasoning_done = True
            self.answer += valid_text(event.text)
        else:
            self.done = self.reasoning_done = True
            self.stats = event.stats
            self.error = valid_text(event.error) if event.error else event.error


@dataclass
class Turn:
    """A question and the answer the conversation continues from."""

    question: Message
    image_paths: list[str]
    question_id: str | None = None
    answer: TurnUpdate | None = None
    # The question's images are the files at `image_paths`, read back when needed.
    images_on_disk: bool = False
    # Every answer to this question, oldest first (regenerated, corrected, compared): the
    # user can page between them, and the one shown is `answer`.
    versions: list[TurnUpdate] = field(default_factory=list)
    # A new answer (or two, compared) is streaming for this question: the page shows it in
    # place of `answer`, which is not the one on screen until it is done.
    answering: bool = False

    @property
    def earlier(self) -> list[TurnUpdate]:
        """The other answers, oldest first."""
        return [v for v in self.versions if v is not self.answer]

    def add_version(self, update: TurnUpdate) -> None:
        """A new answer to this question, which the conversation now continues from."""
        self.versions.append(update)
        self.answer = update

    def position(self) -> int:
        """Which of `versions` is shown, counting from 0."""
        for index, version in enumerate(self.versions):
            if version is self.answer:
                return index
        return len(self.versions) - 1


@dataclass
class Comparison:
    """Two answers to one question, waiting for the user's verdict."""

    turn_index: int
    left: TurnUpdate
    right: TurnUpdate
    mode: CompareMode
    group: str


def valid_text(text: str) -> str:
    """`text` with lone UTF-16 surrogates (which no UTF-8 file or JSON reply can carry)
    replaced by U+FFFD; a split surrogate pair is joined."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def new_client_key() -> str:
    return secrets.token_urlsafe(32)


def usable_client_key(key: object) -> bool:
    return isinstance(key, str) and bool(CLIENT_KEY.fullmatch(key))


@dataclass
class ChatState:
    """What one browser tab carries between events.

    `client_key` starts empty: a default value would be copied into every session and make
    them one person. A tab adopts its browser's stored key on load; anything that needs an
    identity before that (an API client, a tab whose load was refused) gets a fresh one
    from `owner()`.
    """

    client_key: str = ""
    consented: bool = False
    conversation_id: str | None = None
    turns: list[Turn] = field(default_factory=list)
    comparison: Comparison | None = None
    # The answer just disliked, waiting for its reasons: they are about that answer, whatever
    # the tab shows by the time they are sent (another version, another conversation).
    pending_dislike: TurnUpdate | None = None
    # The answer the correction editor was opened on: a correction is of that answer, and
    # is refused once it is no longer the last question's.
    editing: TurnUpdate | None = None
    # An answer is on its way for this tab: another question waits until it is done.
    busy: bool = False
    # Names this tab's folder of images in the studio's scratch folder; made on first use.
    scratch_name: str = ""
    # How many times the tab left the conversation on screen (`Studio.leave`): a stream begun
    # before compares it to tell that what it would draw is no longer shown.
    left: int = 0
    # The thumbs the page was last sent, without trailing empties (`ui.common.view`): a redraw
    # that leaves them as they are sends the messages alone. None once a click on the page
    # changed them there.
    votes_shown: tuple[str | None, ...] | None = ()
    # The words the tab's list of conversations is filtered by (`ui.history`).
    list_filter: str = ""

    def owner(self) -> str:
        """This tab's client key, made on first use."""
        if not self.client_key:
            self.client_key = new_client_key()
        return self.client_key

    def reset(self) -> None:
        self.conversation_id = None
        self.turns = []
        self.comparison = None

    def erased(self, conversation_id: str | None = None) -> None:
        """Stored data went: the conversation `conversation_id`, or all of the browser's when
        None. The tab leaves it if it is shown, and a dislike waiting for its reasons is
        dropped, since it may have been of an erased answer."""
        if conversation_id is None or conversation_id == self.conversation_id:
            self.reset()
        self.pending_dislike = None
        self.editing = None

    def history(self, upto: int | None = None) -> list[Message]:
        """The branch as the engine sees it (answers without their reasoning)."""
        messages: list[Message] = []
        for turn in self.turns[:upto]:
            messages.append(_with_images(turn))
            if turn.answer is not None:
                messages.append(Message("assistant", turn.answer.answer))
        return messages

    def scratch(self) -> str:
        if not self.scratch_name:
            self.scratch_name = secrets.token_hex(16)
        return self.scratch_name

    def last_answer_id(self) -> str | None:
        for turn in reversed(self.turns):
            if turn.answer is not None:
                return turn.answer.answer_id
        return None


def _opened(opening: Future, request: GenerationRequest) -> str | None:
    """The id of an answer row opened in the background, None if it could not be opened."""
    try:
        return opening.result()
    except Exception:  # the answer is already going away; its failure was not the user's
        log.exception("could not open the answer row of request %s", request.request_id)
        return None


def _encoded(pngs: Sequence[Future], index: int) -> bytes | None:
    """The PNG encoding started for image `index`, once done; None when none was started."""
    return pngs[index].result() if index < len(pngs) else None


class Studio:
    """The app's service layer: one engine, one store (or None), shared by every session."""

    def __init__(self, engine: Engine, store: Store | None, *,
                 image_policy: ImagePolicy | None = None, save_interval_s: float = 1.0) -> None:
        self.engine = engine
        self.store = store
        self.image_policy = image_policy or ImagePolicy()
        self.save_interval_s = save_interval_s
        # Per session, the requests streaming for it (two while comparing).
        self._running: dict[str, list[str]] = {}
        # Browsers (client keys) whose latest word, in any of their tabs, was to stop saving:
        # another tab of theirs that still shows "Save my data" ticked keeps nothing either.
        self._withdrawn: set[str] = set()
        self._running_lock = threading.Lock()
        self._running_changed = threading.Condition(self._running_lock)
        self.scratch_dir: Path | None = None
        self._last_sweep = time.monotonic()
        # session key -> its scratch folder name, so a closed tab's images go at once.
        self._scratch_of: dict[str, str] = {}
        # A question's images are encoded as PNG (the session's copy, the store's) while the
        # engine works towards the first token, not after it: the slowest step of keeping
        # them would otherwise delay every first token.
        self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="encode-png")
        # An answer's row is opened beside its first update, not before it: with several
        # visitors the write waits for the database, and the first token would wait with it.
        # One thread: the writes queue for the database anyway, and rows open in the order
        # they were asked for (a comparison's side A before its side B).
        self._row_opener = ThreadPoolExecutor(max_workers=1, thread_name_prefix="open-answer")

    # -- scratch images ------------------------------------------------------------------

    def use_scratch(self, folder: Path) -> None:
        """Keep sessions' images in `folder` (emptied now: no session outlives the process)."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        self.scratch_dir = folder.resolve()
        if self.store is not None:
            self.store.on_erasure(self.forget_images)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_EVERY_S:
            return
        self._last_sweep = now
        oldest = time.time() - SCRATCH_MAX_AGE_S
        for folder in self.scratch_dir.iterdir():
            try:
                if folder.stat().st_mtime < oldest:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                pass

    def _encode_soon(self, images: Sequence[Image.Image]) -> list[Future]:
        """Start encoding `images` as PNG; `_new_turn` and `_store_question` take the results."""
        return [self._encoder.submit(encode_png, image) for image in images]

    def _keep(self, state: ChatState, session_key: str, image, data: bytes | None = None) -> str:
        self._sweep()
        data = encode_png(image) if data is None else data
        folder = self.scratch_dir / state.scratch()
        path = folder / f"{hashlib.sha256(data).hexdigest()}.png"
        if session_key:
            with self._running_lock:
                self._scratch_of[session_key] = state.scratch()
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=folder, prefix=".incoming-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return str(path)

    def _new_turn(self, state: ChatState, question: Message, image_sources: Sequence[Any],
                  session_key: str, pngs: Sequence[Future] = ()) -> Turn:
        if self.scratch_dir is None:
            return Turn(question, [str(s) for s in image_sources if isinstance(s, str | Path)])
        paths = [self._keep(state, session_key, image, _encoded(pngs, index))
                 for index, image in enumerate(question.images)]
        return Turn(Message("user", question.text), paths, images_on_disk=True)

    def end_session(self, session_key: str) -> None:
        """A tab closed: its images go now (its state goes later, with `drop_state`)."""
        with self._running_lock:
            name = self._scratch_of.pop(session_key, None)
        if name and self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir / name, ignore_errors=True)

    def drop_state(self, state: ChatState) -> None:
        """Gradio let go of a tab's state: remove its images."""
        if state.scratch_name and self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir / state.scratch_name, ignore_errors=True)

    def forget_images(self, shas: Sequence[str]) -> None:
        """Erased images: remove their copies from every session."""
        if self.scratch_dir is None:
            return
        for sha in shas:
            for path in self.scratch_dir.glob(f"*/{sha}.png"):
                path.unlink(missing_ok=True)

    # -- control -------------------------------------------------------------------------

    def cancel(self, session_key: str) -> bool:
        """Stop the generation running for this session, if any."""
        with self._running_lock:
            request_ids = list(self._running.get(session_key, ()))
        for request_id in request_ids:
            self.engine.cancel(request_id)
        return bool(request_ids)

    def stop(self, session_key: str, timeout_s: float = STOP_WAIT_S) -> bool:
        """Cancel this session's generation and wait until every answer it was streaming is
        closed and stored (at most `timeout_s`): then the tab can ask again at once, instead
        of being told it is still answering. True when nothing of it is left running."""
        self.cancel(session_key)
        with self._running_changed:
            return self._running_changed.wait_for(
                lambda: not self._running.get(session_key), timeout=timeout_s)

    def leave(self, state: ChatState, session_key: str) -> None:
        """The tab goes elsewhere (a new or another conversation): what it was generating
        stops and is stored as far as it got, a pending verdict is dropped, and once its
        answers are closed the tab may ask again at once. A dislike's reasons can still be
        sent: they belong to the answer disliked."""
        # First: a stream of this tab that ends while `stop` waits must see that its
        # conversation is no longer on screen, or its last redraw would bring it back.
        state.left += 1
        stopped = self.stop(session_key)
        state.comparison = None
        if stopped:
            state.busy = False

    def queue_position(self, session_key: str) -> int | None:
        with self._running_lock:
            request_ids = self._running.get(session_key)
        return None if not request_ids else self.engine.queue_position(request_ids[0])

    def storing(self, state: ChatState) -> bool:
        self.consent_withdrawn(state)
        return self.store is not None and state.consented

    # -- one turn ------------------------------------------------------------------------

    def ask(self, state: ChatState, text: str, image_sources: Sequence[Any],
            options: TurnOptions, *, session_key: str | None = None) -> Iterator[TurnUpdate]:
        """Answer `text` about the images, continuing the state's conversation.

        Raises engine.errors.StudioError (ImageError, ModelNotReady, RequestError, EngineBusy)
        before anything is stored when the turn cannot start.
        """
        question = self._question(text, image_sources)
        # Asking on without a verdict continues from the left answer: the model reads that
        # history, as the store records it.
        self._settle_comparison(state)
        request = self._request([*state.history(), question], options)
        events = self.engine.stream(request)  # refuses here, before anything is written
        turn, (events,) = self._begin(state, question, image_sources, session_key or "",
                                      [(events, request)])
        yield from self._answer_turn(state, turn, events, request, session_key or "")

    def regenerate(self, state: ChatState, options: TurnOptions, *,
                   session_key: str | None = None) -> Iterator[TurnUpdate]:
        """A new answer to the last question; the old one is kept as a sibling."""
        if not state.turns:
            raise RequestError("There is no question to answer again yet.")
        turn = state.turns[-1]
        request = self._request([*state.history(len(state.turns) - 1), _with_images(turn)],
                                options)
        events = self._started(self.engine.stream(request), request, session_key or "")
        self._settle_comparison(state)
        yield from self._answer_turn(state, turn, events, request, session_key or "")

    def _answer_turn(self, state: ChatState, turn: Turn, events: Iterator[Event],
                     request: GenerationRequest, session_key: str) -> Iterator[TurnUpdate]:
        """Stream a new answer to `turn`, stored as it goes; it joins the turn's versions."""
        opening = self._open_answer(state, turn.question_id, request)
        update = self._new_update(request)
        turn.answering = True
        try:
            with self._in_its_conversation(state):
                yield from self._stream(events, update, request, session_key, opening)
        finally:
            # Also when the page stops reading mid-answer: the partial answer, marked
            # cancelled, stays part of the conversation.
            turn.answering = False
            self._settle(state, turn, update)

    def settle_comparison(self, state: ChatState) -> None:
        """The user moves on (asks again) without a verdict: see `_settle_comparison`."""
        self._settle_comparison(state)

    @staticmethod
    def _settle_comparison(state: ChatState) -> None:
        """Moving on without a verdict continues from the left answer and records nothing."""
        comparison = state.comparison
        if comparison is not None and comparison.turn_index < len(state.turns):
            turn = state.turns[comparison.turn_index]
            Studio._keep_sides(turn, comparison, comparison.left)
        state.comparison = None

    def _settle(self, state: ChatState, turn: Turn, update: TurnUpdate) -> None:
        if update.stats and update.stats.finish_reason != "error":
            turn.add_version(update)
        elif turn.answer is None and turn in state.turns:
            # A failed first answer does not join the branch; the question is dropped from
            # the view too, so that it can simply be asked again.
            state.turns.remove(turn)

    # -- compare -------------------------------------------------------------------------

    def compare_modes(self) -> dict[CompareMode, str]:
        caps = self.engine.capabilities()
        modes: dict[CompareMode, str] = {"samples": "Two samples"}
        if caps.thinking:
            modes["thinking"] = "Thinking on vs off"
        if caps.adapters:
            # The adapter side is the variant chosen in the settings, or the first adapter
            # when the base model is (`_compare_options`); the label says which with several.
            first = caps.adapters[0]
            modes["adapter"] = (f"Base vs adapter ({first})" if len(caps.adapters) == 1 else
                                f"Base vs adapter (the variant chosen, else {first})")
        return modes

    def compare(self, state: ChatState, text: str, image_sources: Sequence[Any],
                options: TurnOptions, mode: CompareMode, *, session_key: str | None = None,
                rng: random.Random | None = None) -> Iterator[tuple[TurnUpdate, TurnUpdate]]:
        """Two answers to one question, in random sides; yields (left, right) as they stream.

        The verdict (`judge`) decides which one the conversation continues from.
        """
        caps = self.engine.capabilities()
        question = self._question(text, image_sources)
        self._settle_comparison(state)  # as in `ask`
        history = [*state.history(), question]
        first, second = self._compare_options(options, mode, caps)
        if (rng or random).random() < 0.5:
            first, second = second, first
        (left_label, left_options), (right_label, right_options) = first, second
        left_request = self._request(history, left_options)
        right_request = self._request(history, right_options)
        # Both are accepted or refused before anything is stored; then they stream at the
        # same time (a batching engine decodes them together).
        left_events = self.engine.stream(left_request)
        try:
            right_events = self.engine.stream(right_request)
        except BaseException:
            self._cancel_and_read(left_events, left_request)
            raise
        turn, (left_events, right_events) = self._begin(
            state, question, image_sources, session_key or "",
            [(left_events, left_request), (right_events, right_request)])
        group = uuid.uuid4().hex
        left_row = self._open_answer(state, turn.question_id, left_request, group, "A")
        right_row = self._open_answer(state, turn.question_id, right_request, group, "B")
        left = self._new_update(left_request, left_label)
        right = self._new_update(right_request, right_label)
        turn.answering = True
        try:
            for _ in self._stream_together([(left_events, left, left_request, left_row),
                                            (right_events, right, right_request, right_row)],
                                           session_key or ""):
                yield left, right
        finally:
            turn.answering = False
        if turn in state.turns:  # not when the user moved on to another conversation
            state.comparison = Comparison(state.turns.index(turn), left, right, mode, group)

    def _stream_together(self, streams, session_key: str) -> Iterator[None]:
        """Run several `_stream`s at once, each in its own thread; yield after any moves.

        A consumer that goes away cancels them all; each still closes its answer row. A
        stream that failed (its row could not be written) is raised once all have ended."""
        changed: queue.Queue = queue.Queue()
        failures: list[Exception] = []

        def pump(events, update, request, opening) -> None:
            try:
                for _ in self._stream(events, update, request, session_key, opening):
                    changed.put(False)
            except Exception as exc:
                log.exception("a compared answer failed")
                failures.append(exc)
            finally:
                changed.put(True)

        threads = [threading.Thread(target=pump, args=stream, daemon=True,
                                    name=f"compare-{stream[2].request_id[:8]}")
                   for stream in streams]
        for thread in threads:
            thread.start()
        finished = 0
        try:
            while finished < len(threads):
                if changed.get():
                    finished += 1
                yield None
        finally:
            if finished < len(threads):
                for _, _, request, _ in streams:
                    self.engine.cancel(request.request_id)
            for thread in threads:
                thread.join(timeout=30)
        if failures:
            raise failures[0]

    @staticmethod
    def _compare_options(options: TurnOptions, mode: CompareMode, caps):
        if mode == "thinking":
            return (("Thinking on", replace(options, thinking=True)),
                    ("Thinking off", replace(options, thinking=False)))
        if mode == "adapter":
            if not caps.adapters:
                raise RequestError("No adapter is loaded to compare with the base model.")
            adapter = options.adapter or caps.adapters[0]
            return (("Base model", replace(options, adapter=None)),
                    (f"Adapter {adapter}", replace(options, adapter=adapter)))
        # Two samples: the same settings with different seeds, sampled even if greedy was set.
        sampling = options.sampling
        temperature = sampling.temperature if sampling.temperature > 0 else 0.7
        seed = pick_seed(sampling.seed)
        return (("Sample 1", replace(options, sampling=replace(
                    sampling, temperature=temperature, seed=seed))),
                ("Sample 2", replace(options, sampling=replace(
                    sampling, temperature=temperature, seed=(seed + 1) % SEED_RANGE))))

    def judge(self, state: ChatState, verdict: Verdict) -> str:
        """Record the verdict on the pending comparison; the chosen answer continues."""
        comparison = state.comparison
        if comparison is None:
            raise RequestError("There is no comparison waiting for a verdict.")
        turn = state.turns[comparison.turn_index]
        left, right = comparison.left, comparison.right
        chosen = right if verdict == "B" else left
        stored = self.storing(state) and left.answer_id and right.answer_id
        if stored:
            with self._in_its_conversation(state, judging=True):
                if verdict in ("A", "B"):
                    other = left if verdict == "B" else right
                    self.store.add_pick(state.owner(), chosen.answer_id, other.answer_id,
                                        left.answer_id)
                else:
                    self.store.add_feedback(state.owner(), left.answer_id, verdict,
                                            other_message_id=right.answer_id)
        self._keep_sides(turn, comparison, chosen)
        state.comparison = None
        messages = {"A": "Thanks: the left answer was preferred.",
                    "B": "Thanks: the right answer was preferred.",
                    "tie": "Thanks: recorded as a tie.",
                    "both_bad": "Thanks: recorded that both answers are bad."}
        suffix = "" if stored else " (not saved: “Save my data” is off)"
        return messages[verdict] + suffix

    @staticmethod
    def _keep_sides(turn: Turn, comparison: Comparison, chosen: TurnUpdate) -> None:
        """Both sides become versions of the turn (as far as they got); `chosen` is shown."""
        for side in (comparison.left, comparison.right):
            if side.done and side not in turn.versions:
                turn.versions.append(side)
        if chosen in turn.versions:
            turn.answer = chosen
        elif turn.versions:
            turn.answer = turn.versions[0]

    # -- feedback ------------------------------------------------------------------------

    def vote(self, state: ChatState, answer_id: str | None, liked: bool | None,
             reasons: Sequence[str] = (), comment: str = "") -> str:
        """Like (True), dislike (False, with reasons), or withdraw (None) a vote."""
        if not self.storing(state) or not answer_id:
            return NO_CONSENT_FEEDBACK
        kind = "clear" if liked is None else "like" if liked else "dislike"
        with self._in_its_conversation(state, judging=True):
            self.store.add_feedback(state.owner(), answer_id, kind,
                                    reasons=list(reasons) if kind == "dislike" else (),
                                    comment=(valid_text(comment).strip() or None)
                                    if kind == "dislike" else None)
        return {"like": "Thanks for the feedback.", "clear": "Vote withdrawn.",
                "dislike": "Thanks: your feedback was saved."}[kind]

    def rate(self, state: ChatState, turn_index: int, liked: bool | None) -> str:
        """Vote on the answer a turn shows, whichever of its messages was clicked. A dislike
        then waits for its reasons (`explain_dislike`). An answer still streaming is refused:
        the vote would go to the answer it replaces on screen."""
        if 0 <= turn_index < len(state.turns) and state.turns[turn_index].answering:
            raise RequestError("Wait until this answer has finished, then rate it.")
        answer = self._shown_answer(state, turn_index)
        note = self.vote(state, answer.answer_id, liked)
        answer.vote = None if liked is None else "like" if liked else "dislike"
        state.pending_dislike = answer if liked is False else None
        return note

    def explain_dislike(self, state: ChatState, reasons: Sequence[str], comment: str) -> str:
        """The reasons for the answer last disliked, recorded on that answer."""
        answer, state.pending_dislike = state.pending_dislike, None
        gone = RequestError("The answer you disliked is no longer here; "
                            "your reasons were not saved.")
        if answer is None:
            raise gone
        try:
            return self.vote(state, answer.answer_id, False, reasons, comment)
        except NotFound:
            # Deleted from another tab while this one shows another conversation.
            raise gone from None

    def select(self, state: ChatState, turn_index: int, step: int) -> TurnUpdate:
        """Show the previous (-1) or next (+1) answer of a turn; the conversation continues
        from the one shown, and only the last turn can change branch."""
        if state.comparison is not None:
            raise RequestError("Give your verdict on the two answers first.")
        if not state.turns or turn_index != len(state.turns) - 1:
            raise RequestError("Only the last question's answers can be switched.")
        turn = state.turns[turn_index]
        position = turn.position() + step
        if not turn.versions or not 0 <= position < len(turn.versions):
            raise RequestError("There is no other answer that way.")
        turn.answer = turn.versions[position]
        return turn.answer

    @staticmethod
    def _shown_answer(state: ChatState, turn_index: int) -> TurnUpdate:
        if not 0 <= turn_index < len(state.turns) or state.turns[turn_index].answer is None:
            raise RequestError("That answer is no longer shown; rate the one on screen.")
        return state.turns[turn_index].answer

    def open_editor(self, state: ChatState) -> str:
        """The text of the last answer shown, which a correction saved later is of
        (`save_correction`), whatever the tab shows by then."""
        last = state.turns[-1] if state.turns else None
        if state.busy or last is None or last.answer is None or last.answering:
            raise RequestError("There is no finished answer to correct yet.")
        state.editing = last.answer
        return last.answer.answer

    def save_correction(self, state: ChatState, text: str) -> str:
        """Correct the answer the editor was opened on. Paged away from (or regenerated
        since), it is shown again with its correction; gone from the last question (another
        conversation, a new question), the correction is refused rather than put on another
        answer."""
        if state.busy:
            raise RequestError("Wait until the answer has finished, then save your correction.")
        target, turn = state.editing, state.turns[-1] if state.turns else None
        version = None if target is None or turn is None else next(
            (v for v in turn.versions if v is target
             or (target.answer_id is not None and v.answer_id == target.answer_id)), None)
        if version is None or state.comparison is not None:
            raise RequestError("The answer you were correcting is no longer the last one "
                               "shown, so your correction was not saved.")
        turn.answer = version
        state.editing = None
        return self.edit(state, len(state.turns) - 1, text)

    def edit(self, state: ChatState, turn_index: int, text: str) -> str:
        """Replace a turn's answer with the user's correction (kept as a sibling answer)."""
        turn = state.turns[turn_index]
        if turn.answer is None:
            raise RequestError("There is no answer to correct here.")
        text = valid_text(text).strip()
        if not text or text == turn.answer.answer.strip():
            return "Nothing changed."
        edit_id = None
        if self.storing(state) and turn.answer.answer_id:
            with self._in_its_conversation(state, judging=True):
                edit_id = self.store.add_edit(state.owner(), turn.answer.answer_id, text)
        turn.add_version(TurnUpdate(answer=text, done=True, answer_id=edit_id, label="Edited",
                                    model="your correction", corrects=turn.answer))
        return ("Saved your correction." if edit_id else
                "Correction applied. " + NO_CONSENT_FEEDBACK)

    # -- consent -------------------------------------------------------------------------

    def give_consent(self, state: ChatState) -> str:
        """Start saving; the conversation so far is stored whole, never from the middle.

        Questions and answers shown before consent are written in order (with their images,
        regenerated and corrected answers, and the thumbs given them), so the stored
        conversation has all its context.
        """
        if self.store is None:
            state.consented = True
            return "This server keeps no data."
        if state.comparison is not None:
            raise RequestError("Give your verdict on the two answers first, then tick "
                               "“Save my data”.")
        state.consented = True
        self._withdrawn.discard(state.owner())
        missing = [turn for turn in state.turns if turn.question_id is None]
        for turn in missing:
            self._store_turn(state, turn)
        if missing:
            count = len(missing)
            return (f"Saving on: the conversation so far ({count} question"
                    f"{'s' if count != 1 else ''}) was saved, and what follows will be.")
        return "Saving on: your conversations, images and feedback will be kept."

    def withdraw_consent(self, state: ChatState) -> None:
        """Stop saving, in this tab and in every other tab of the same browser."""
        state.consented = False
        self._withdrawn.add(state.owner())

    def consent_withdrawn(self, state: ChatState) -> bool:
        """Whether this tab consented and its browser has since stopped saving in another
        tab; the tab then stops saving too."""
        withdrawn = state.consented and state.client_key in self._withdrawn
        if withdrawn:
            state.consented = False
        return withdrawn

    def _store_turn(self, state: ChatState, turn: Turn) -> None:
        """Store a question and its answers that were shown before the user consented."""
        index = state.turns.index(turn)
        parent = state.turns[index - 1].answer if index > 0 else None
        if index > 0 and (parent is None or parent.answer_id is None):
            return  # its context could not be stored: never keep a fragment
        # The question follows the previous turn's shown answer, as when it was asked.
        # With its images, which a scratch folder keeps on disk rather than in the turn.
        turn.question_id = self._store_question(
            state, _with_images(turn), parent.answer_id if parent is not None else None)
        for version in turn.versions:
            if version.answer_id is not None:
                continue
            if version.label == "Edited":
                corrected = version.corrects
                if corrected is not None and corrected.answer_id is not None:
                    version.answer_id = self.store.add_edit(state.owner(),
                                                            corrected.answer_id, version.answer)
            elif version.request is not None and version.stats is not None:
                row = self._answer_row(state, turn.question_id, version.request)
                version.answer_id = row() if row is not None else None
                self._close_answer(version.answer_id, version)
            # The thumb the page shows on it is kept too, before any later correction of it.
            if version.vote in ("like", "dislike") and version.answer_id is not None:
                self.store.add_feedback(state.owner(), version.answer_id, version.vote)

    # -- history -------------------------------------------------------------------------

    def conversations(self, state: ChatState):
        if self.store is None:
            return []
        return self.store.list_conversations(state.owner())

    def open_conversation(self, state: ChatState, conversation_id: str) -> None:
        """Load a stored conversation along the branch it last went on from, ready to
        continue: at each turn the answer whose follow-up question came last (the user may
        have paged back to an earlier answer and asked on from it), and at the last turn its
        newest answer."""
        conversation = self.store.get_conversation(state.owner(), conversation_id)
        by_parent: dict[str | None, list] = {}
        for message in conversation.messages:
            by_parent.setdefault(message.parent_id, []).append(message)
        order = {message.id: index for index, message in enumerate(conversation.messages)}

        def last_asked(answer: TurnUpdate) -> int:
            asked = [order[m.id] for m in by_parent.get(answer.answer_id, [])
                     if m.role == "user"]
            return max(asked, default=-1)
        turns: list[Turn] = []
        parent: str | None = None
        while True:
            questions = [m for m in by_parent.get(parent, []) if m.role == "user"]
            if not questions:
                break
            question = questions[-1]
            paths = [str(self.store.image_path(sha)) for sha in question.image_shas]
            if self.scratch_dir is None:
                images = tuple(load_image(path, self.image_policy) for path in paths)
                turn = Turn(Message("user", question.text, images), paths, question.id)
            else:
                turn = Turn(Message("user", question.text),
                            [self._keep(state, "", load_image(path, self.image_policy))
                             for path in paths], question.id, images_on_disk=True)
            answers = [m for m in by_parent.get(question.id, []) if m.role == "assistant"
                       and m.status == "done" and (m.stats is None
                                                   or m.stats.finish_reason != "error")]
            for answer in answers:
                turn.add_version(self._stored_update(answer))
            followed = max(turn.versions, key=last_asked, default=None)
            if followed is not None and last_asked(followed) >= 0:
                turn.answer = followed
            turns.append(turn)
            if turn.answer is None:
                break
            parent = turn.answer.answer_id
        state.conversation_id = conversation.id
        state.turns = turns
        state.comparison = None

    @staticmethod
    def _stored_update(message) -> TurnUpdate:
        stats = None
        if message.stats is not None:
            s = message.stats
            stats = Stats(reasoning_tokens=s.reasoning_tokens, answer_tokens=s.answer_tokens,
                          time_to_first_token_s=s.time_to_first_token_s,
                          duration_s=s.duration_s, finish_reason=s.finish_reason, seed=s.seed,
                          budget_exhausted=s.budget_exhausted)
        meta = message.meta
        return TurnUpdate(
            answer=message.text, reasoning=message.reasoning, reasoning_done=True, done=True,
            stats=stats, answer_id=message.id,
            model=meta.model_id if meta else "your correction",
            adapter=meta.adapter if meta else None,
            label="Edited" if message.origin == "edit" else "",
            vote=message.vote.kind if message.vote and message.vote.kind != "clear" else None)

    def rename_conversation(self, state: ChatState, conversation_id: str, title: str) -> None:
        self.store.rename_conversation(state.owner(), conversation_id,
                                       valid_text(title).strip()[:200] or "Untitled")

    def delete_conversation(self, state: ChatState, conversation_id: str) -> ErasureCounts:
        counts = self.store.delete_conversation(state.owner(), conversation_id)
        state.erased(conversation_id)
        return counts

    def delete_my_data(self, state: ChatState) -> ErasureCounts:
        counts = self.store.delete_user_data(state.owner()) if self.store else ErasureCounts()
        state.erased()
        return counts

    # -- shared steps --------------------------------------------------------------------

    def _question(self, text: str, image_sources: Sequence[Any]) -> Message:
        images = tuple(load_image(source, self.image_policy) for source in image_sources)
        text = valid_text(text)
        if not text.strip() and not images:
            raise RequestError("Type a question or add an image first.")
        return Message("user", text.strip(), images)

    @staticmethod
    def _request(history: list[Message], options: TurnOptions) -> GenerationRequest:
        sampling = options.sampling
        # Picked here rather than in the engine, so the seed stored with the answer is the
        # one used even when the answer never finishes.
        sampling = replace(sampling, seed=pick_seed(sampling.seed))
        return GenerationRequest(
            messages=tuple(history),
            thinking=options.thinking,
            # Sent whether or not thinking is asked for: a template that always thinks
            # does so anyway, and the engine applies the budget exactly when it thinks.
            thinking_budget=options.thinking_budget,
            sampling=sampling,
            adapter=options.adapter,
        )

    def _store_question(self, state: ChatState, question: Message, parent_id: str | None,
                        pngs: Sequence[Future] = ()) -> str | None:
        if not self.storing(state):
            return None
        shas = []
        for index, image in enumerate(question.images):
            data = _encoded(pngs, index)
            shas.append(self.store.put_image(ImageBlob(
                data=encode_png(image) if data is None else data, format="PNG",
                width=image.width, height=image.height)))
        if state.conversation_id is None:
            title = question.text[:TITLE_LENGTH] or "Image question"
            state.conversation_id = self.store.create_conversation(
                state.owner(), title, consent_version=CONSENT_VERSION)
        with self._in_its_conversation(state):
            return self.store.add_user_message(
                state.owner(), state.conversation_id, text=question.text, image_shas=shas,
                parent_id=parent_id)

    @contextmanager
    def _in_its_conversation(self, state: ChatState, judging: bool = False):
        """Around a write to the tab's conversation (a judgement when `judging`). One deleted
        meanwhile (by the same browser's other tab: erasure reaches every tab's data) is
        said so once, and the tab starts afresh: asking on would otherwise fail the same way
        every time."""
        try:
            yield
        except NotFound:
            if state.conversation_id is None or self._still_stored(state):
                raise
            state.erased(state.conversation_id)
            raise ConversationGone(JUDGED_GONE if judging else CONVERSATION_GONE) from None

    def _still_stored(self, state: ChatState) -> bool:
        try:
            self.store.get_conversation(state.owner(), state.conversation_id)
        except NotFound:
            return False
        return True

    def _open_answer(self, state: ChatState, question_id: str | None,
                     request: GenerationRequest, group: str | None = None,
                     side: str | None = None) -> Future | None:
        """Start opening the answer row on the row opener's thread (`_answer_row`); the
        future's result is its id. None when nothing is stored."""
        row = self._answer_row(state, question_id, request, group, side)
        return None if row is None else self._row_opener.submit(row)

    def _answer_row(self, state: ChatState, question_id: str | None,
                    request: GenerationRequest, group: str | None = None,
                    side: str | None = None) -> Callable[[], str] | None:
        """The write that opens the answer row for `question_id`, which returns its id; None
        when nothing is stored. What it writes is taken from the state now, so a tab that
        moves on before it runs changes nothing."""
        if question_id is None or not self.storing(state):
            return None
        caps = self.engine.capabilities()
        # What the model did, not what was asked: its template may think always, or never.
        thinking = thinking_on(caps.thinking_mode, request.thinking) if caps.thinking else False
        meta = AnswerMeta(
            model_id=caps.model_id, revision=caps.revision, quantization=caps.quantization,
            adapter=request.adapter, thinking=thinking,
            # Stored only where the engine applies it: provenance says what happened.
            thinking_budget=request.thinking_budget if thinking and caps.thinking_budget else None,
            sampling=asdict(request.sampling),
            seed=request.sampling.seed, compare_group=group, side=side,
        )
        return functools.partial(self.store.start_answer, state.owner(), state.conversation_id,
                                 parent_id=question_id, meta=meta)

    def _new_update(self, request: GenerationRequest, label: str = "") -> TurnUpdate:
        """An answer about to stream; `_stream` gives it its row's id once the row is open."""
        return TurnUpdate(model=self.engine.capabilities().model_id,
                          adapter=request.adapter, label=label, request=request)

    def _begin(self, state: ChatState, question: Message, image_sources: Sequence[Any],
               session_key: str, streams: list[tuple[Iterator[Event], GenerationRequest]]
               ) -> tuple[Turn, list[Iterator[Event]]]:
        """The new turn, stored while the engine reads the prompt (the first token does not
        wait for the disk), and each stream once it has started (`_started`). A request the
        engine ends unanswered withdraws the stored question: it goes back to the box, and a
        question nobody answered is not kept. Returns the turn, joined to the state."""
        for _, request in streams:
            self._register_running(session_key, request)  # Stop works from here on
        turn: Turn | None = None
        started: list[Iterator[Event]] = []
        try:
            pngs = self._encode_soon(question.images)
            turn = self._new_turn(state, question, image_sources, session_key, pngs)
            turn.question_id = self._store_question(state, question, state.last_answer_id(),
                                                    pngs)
            for events, request in streams:
                started.append(self._started(events, request, session_key))
        except BaseException:
            for events, request in streams:
                self._cancel_and_read(events, request)  # ends at once, or is already over
                self._forget_running(session_key, request)
            if turn is not None and turn.question_id is not None:
                self._withdraw(state, turn.question_id)
            raise
        state.turns.append(turn)
        return turn, started

    def _withdraw(self, state: ChatState, question_id: str) -> None:
        try:
            counts = self.store.withdraw_question(state.owner(), question_id)
        except Exception:  # the refusal is what the user needs to hear; this is logged
            log.exception("could not withdraw the unanswered question %s", question_id)
            return
        if counts.conversations:
            state.conversation_id = None

    def _started(self, events: Iterator[Event], request: GenerationRequest,
                 session_key: str) -> Iterator[Event]:
        """Wait for the engine's first event (Stop works meanwhile); raise NotAnswered if the
        request ended before its first token, else return the whole stream."""
        self._register_running(session_key, request)
        try:
            first = next(events, None)
        except BaseException:
            self._forget_running(session_key, request)
            raise
        refused = first is None or (
            first.kind == "done" and first.error and (
                first.stats is None or first.stats.total_tokens == 0))
        if refused:
            self._forget_running(session_key, request)
            _close(events)
            raise NotAnswered(valid_text(first.error) if first is not None and first.error
                              else "The model did not answer; please try again.")
        return _resumed(first, events)

    def _register_running(self, session_key: str, request: GenerationRequest) -> None:
        with self._running_lock:
            running = self._running.setdefault(session_key, [])
            if request.request_id not in running:
                running.append(request.request_id)

    def _forget_running(self, session_key: str, request: GenerationRequest) -> None:
        with self._running_lock:
            running = self._running.get(session_key, [])
            if request.request_id in running:
                running.remove(request.request_id)
            if not running:
                self._running.pop(session_key, None)
            self._running_changed.notify_all()

    @property
    def streaming(self) -> int:
        """How many answers are streaming right now, from every session."""
        with self._running_lock:
            return sum(len(ids) for ids in self._running.values())

    def _stream(self, events: Iterator[Event], update: TurnUpdate, request: GenerationRequest,
                session_key: str, opening: Future | None = None) -> Iterator[TurnUpdate]:
        """Fill `update` from the engine's events, yielding it after each; save as it goes.

        `opening` is the answer's row being opened (`_open_answer`): the first update goes out
        without waiting for it, every later one after it, so a row that cannot be written
        (a full disk) stops the answer at its second update, as it would have at its first."""
        self._register_running(session_key, request)
        reasoning_started: float | None = None
        started = last_save = time.monotonic()
        closed = sent = False
        try:
            for event in events:
                now = time.monotonic()
                if event.kind == "reasoning":
                    reasoning_started = reasoning_started or now
                    update.reasoning_seconds = now - reasoning_started
                elif event.kind == "answer" and reasoning_started and not update.reasoning_done:
                    update.reasoning_seconds = now - reasoning_started
                update.take(event)
                if opening is not None and (sent or update.done):
                    pending, opening = opening, None
                    update.answer_id = pending.result()
                answer_id = update.answer_id
                if update.done:
                    self._close_answer(answer_id, update)
                    closed = True
                if answer_id and not closed and now - last_save >= self.save_interval_s:
                    self.store.save_partial(answer_id, text=update.answer,
                                            reasoning=update.reasoning)
                    last_save = now
                yield update
                sent = True
        finally:
            try:
                if not closed:
                    # The consumer went away mid-answer (a closed tab): stop the engine as
                    # Stop does and keep what really happened, counts included.
                    self._drain_cancelled(events, update, request, started)
                    if opening is not None:
                        update.answer_id = _opened(opening, request)
                    self._close_answer(update.answer_id, update)
            finally:
                # Only now is the answer closed: `stop` waits for exactly this.
                self._forget_running(session_key, request)

    def _drain_cancelled(self, events: Iterator[Event], update: TurnUpdate,
                         request: GenerationRequest, started: float) -> None:
        """Cancel `request` and read its remaining events into `update`: the engine ends a
        cancelled request with its real stats. An engine that ends without them (it failed)
        leaves the counts it cannot know at zero and the time that really passed."""
        self._cancel_and_read(events, request, update.take)
        stats = update.stats or Stats(finish_reason="cancelled", seed=request.sampling.seed,
                                      duration_s=time.monotonic() - started)
        # Stopped, not failed: what the engine reported while stopping is not the answer's error.
        update.stats, update.error = replace(stats, finish_reason="cancelled"), None
        update.done = update.reasoning_done = True

    def _cancel_and_read(self, events: Iterator[Event], request: GenerationRequest,
                         take: Callable[[Event], None] = lambda event: None) -> None:
        """Cancel `request` and hand its remaining events to `take`, then close the stream:
        a stream nobody reads would not notice its cancellation."""
        self.engine.cancel(request.request_id)
        try:
            for event in events:
                take(event)
        except Exception:  # already going away: what was said so far is what is kept
            log.exception("the engine failed while stopping request %s", request.request_id)
        finally:
            _close(events)

    def _close_answer(self, answer_id: str | None, update: TurnUpdate) -> None:
        if answer_id is None or update.stats is None:
            return
        stats = update.stats
        measured = AnswerStats(reasoning_tokens=stats.reasoning_tokens,
                               answer_tokens=stats.answer_tokens,
                               time_to_first_token_s=stats.time_to_first_token_s,
                               duration_s=stats.duration_s, finish_reason=stats.finish_reason,
                               error=update.error, seed=stats.seed,
                               budget_exhausted=stats.budget_exhausted)
        # A row left "streaming" hides the turns asked after it when the conversation is
        # opened again: figures the store refuses leave the text and how it ended.
        bare = AnswerStats(finish_reason=stats.finish_reason, error=update.error)
        for kept in (measured, bare):
            try:
                self.store.finish_answer(answer_id, text=update.answer,
                                         reasoning=update.reasoning, stats=kept)
                return
            except Exception:  # the answer was shown; losing its row must not hide it
                log.exception("could not save answer %s", answer_id)


def _with_images(turn: Turn) -> Message:
    """The turn's question with its images, read back from disk when kept there."""
    if not turn.images_on_disk:
        return turn.question
    images = []
    for path in turn.image_paths:
        try:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        except OSError:
            raise RequestError("An image of this conversation is no longer available "
                               "(it was deleted); start a new conversation.") from None
    return replace(turn.question, images=tuple(images))


def _close(events: Iterator[Event]) -> None:
    close = getattr(events, "close", None)
    if close is not None:
        close()


def _resumed(first: Event, events: Iterator[Event]) -> Iterator[Event]:
    """`first`, then the rest of `events`; closing this closes them (stops the engine)."""
    try:
        yield first
        yield from events
    finally:
        _close(events)
