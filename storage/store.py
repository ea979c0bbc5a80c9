"""Conversations, answers, images and feedback in one SQLite file.

Contract:
- Every public method that touches a conversation or message takes the browser's client key
  and raises `NotFound` unless that key owns it; the database keeps only a sha256 of the key.
  The streaming writes (`save_partial`, `finish_answer`) take the answer id returned by
  `start_answer` instead, because only the server ever holds it.
- One logical write is one transaction, begun IMMEDIATE, so concurrent writers queue on the
  busy timeout instead of failing with "database is locked". WAL lets readers run alongside.
- Each thread gets its own connection (thread-local); no connection is used by two threads.
- A question and its images are committed before its answer starts; one the model never
  answers is withdrawn (`withdraw_question`). An answer row exists from the first token on
  with status "streaming"; `recover()` marks rows left streaming by a crash as finished with
  reason "interrupted". Construction runs it unless `recover=False`:
  a second process opening the file while the app runs (an export, a backup) must pass
  `recover=False`, or it would cut off the app's answers in flight.
- Messages form a tree: a regenerated, edited or compared answer is a new sibling under the
  same question, never an overwrite. Feedback rows are append-only; the latest one wins.
- Images are stored once per sha256 in a content-addressed folder beside the database
  (see storage.images); deleting data removes image files no remaining message refers to.
- Evaluation runs hold counts and metrics only, never user text, so erasing a user's data
  leaves them as they are.

Nothing here knows about models, Gradio or the engine.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import sqlite3
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from storage import images
from storage.errors import InvalidRequest, NotFound, OutOfSpace, StorageError
from storage.ids import new_id
from storage.migrations import migrate
from storage.records import (
    FINISH_REASONS,
    PAIR_KINDS,
    VOTE_KINDS,
    AnswerMeta,
    AnswerStats,
    Conversation,
    ConversationSummary,
    ErasureCounts,
    EvaluationRun,
    Feedback,
    ImageBlob,
    ImageInfo,
    StoredMessage,
    StoreStats,
)

log = logging.getLogger(__name__)

NO_SPACE = ("The server is out of disk space: nothing was saved. "
            "Please tell its administrator, and try again later.")
NO_SPACE_TO_ERASE = ("The server is out of disk space, so your data could not be deleted "
                     "just now; nothing was changed. Please try again later.")
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26
# SQLite's integers are 64-bit: a larger Python int cannot be written at all.
_MAX_INTEGER = 2**63 - 1

# Long enough for any single write to finish; a writer waiting this long means a bug.
BUSY_TIMEOUT_S = 30.0


def _system_clock() -> datetime:
    return datetime.now(UTC)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def client_hash(client_key: str) -> str:
    """The digest stored in place of a client key."""
    if not isinstance(client_key, str) or not client_key:
        raise InvalidRequest("A client key is required.")
    return hashlib.sha256(client_key.encode()).hexdigest()


class Store:
    """The database file at `path` plus its image folder (default: "images" beside it).

    Opening creates both if needed, applies pending migrations and, unless `recover=False`,
    marks answers a crash left streaming as interrupted (`recovered` says how many).
    `clock` supplies timestamps; tests pass a fake one to exercise retention.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        images_dir: str | Path | None = None,
        recover: bool = True,
        clock: Callable[[], datetime] = _system_clock,
    ) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InvalidRequest(f"{self.path} is a folder: give the path of a database file.")
        self.images_dir = Path(images_dir) if images_dir else self.path.parent / "images"
        for folder in (self.path.parent, self.images_dir):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise InvalidRequest(
                    f"Cannot make the folder {folder}: {error.strerror}.") from error
        self._local = threading.local()
        # Weak, so a connection goes away with the thread that made it; close() reaches
        # the ones still alive.
        self._connections: weakref.WeakSet[Database] = weakref.WeakSet()
        self._connections_lock = threading.Lock()
        # Serialises "file + row" for images against erasure's "row + file", so an upload
        # of bytes that are being erased at the same moment keeps its file.
        self._image_lock = threading.Lock()
        self._closed = False
        # Called after every erasure, so copies kept elsewhere (exports) go with the data.
        self._erasure_listeners: list[Callable[[list[str]], None]] = []
        # Timestamps (activity, retention) come from here, so retention can be tested.
        self._clock = clock
        try:
            self._db().enable_wal()
            with self._write() as db:
                migrate(db)
        except sqlite3.DatabaseError as error:
            self.close()
            if getattr(error, "sqlite_errorcode", None) in (_SQLITE_CANTOPEN, _SQLITE_NOTADB):
                raise InvalidRequest(
                    f"{self.path} cannot be opened as a database ({error}).") from error
            raise
        self.recovered = self.recover() if recover else 0

    @classmethod
    def existing(cls, path: str | Path, **options: Any) -> Store:
        """The store at `path`, which must already exist: a command that reads or copies
        the data would otherwise make an empty database at a mistyped path and report
        success."""
        if not Path(path).exists():
            raise InvalidRequest(f"no database at {path}")
        return cls(path, **options)

    # -- connections and transactions -------------------------------------------------

    def _db(self) -> Database:
        db = getattr(self._local, "db", None)
        if db is not None:
            return db
        if self._closed:
            raise StorageError("The store is closed.")
        # isolation_level=None: the driver opens no transactions behind our back; every
        # transaction below is explicit. check_same_thread=False only so close() can close
        # connections of other threads; each connection is otherwise used by its own thread.
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA foreign_keys = ON")
        # FULL: a committed question survives a power cut, not just a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        # Erased rows are overwritten with zeros rather than left in free pages.
        conn.execute("PRAGMA secure_delete = ON")
        db = Database(conn, execute_plugins=False)
        self._local.db = db
        with self._connections_lock:
            self._connections.add(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[Database]:
        db = self._db()
        try:
            db.conn.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.conn.execute("COMMIT")
            except BaseException:
                if db.conn.in_transaction:
                    db.conn.execute("ROLLBACK")
                raise
        except (sqlite3.DatabaseError, OSError) as error:
            if _is_full(error):
                raise OutOfSpace(NO_SPACE) from error
            raise

    @contextmanager
    def _read(self) -> Iterator[Database]:
        """A read transaction: several queries see one snapshot."""
        db = self._db()
        db.conn.execute("BEGIN")
        try:
            yield db
        finally:
            if db.conn.in_transaction:
                db.conn.execute("COMMIT")

    def close(self) -> None:
        self._closed = True
        with self._connections_lock:
            for db in list(self._connections):
                db.close()
            self._connections = weakref.WeakSet()
        self._local = threading.local()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def on_erasure(self, callback: Callable[[list[str]], None]) -> None:
        """Call `callback(image_shas)` after every erasure (a conversation, a client's data,
        retention) has committed and its image files are gone; `image_shas` are the sha256s
        of the images no longer stored, whose copies elsewhere should go too."""
        self._erasure_listeners.append(callback)

    # -- ownership ----------------------------------------------------------------------

    def _conversation_row(self, db: Database, owner: str, conversation_id: str) -> dict:
        rows = list(
            db.query(
                "SELECT * FROM conversations WHERE id = ? AND client_hash = ?",
                [conversation_id, owner],
            )
        )
        if not rows:
            raise NotFound("No such conversation.")
        return rows[0]

    def _message_row(self, db: Database, owner: str, message_id: str) -> dict:
        rows = list(
            db.query(
                """
                SELECT m.* FROM messages m JOIN conversations c ON c.id = m.conversation_id
                WHERE m.id = ? AND c.client_hash = ?
                """,
                [message_id, owner],
            )
        )
        if not rows:
            raise NotFound("No such message.")
        return rows[0]

    def _answer_row(self, db: Database, owner: str, message_id: str) -> dict:
        row = self._message_row(db, owner, message_id)
        if row["role"] != "assistant":
            raise InvalidRequest("Only answers can be rated or corrected.")
        return row

    def _answer_pair(self, db: Database, owner: str, first_id: str, second_id: str) -> dict:
        if first_id == second_id:
            raise InvalidRequest("A comparison needs two different answers.")
        first = self._answer_row(db, owner, first_id)
        second = self._answer_row(db, owner, second_id)
        if (first["conversation_id"], first["parent_id"]) != (
            second["conversation_id"],
            second["parent_id"],
        ):
            raise InvalidRequest("Both answers must answer the same question.")
        return first

    def _now(self) -> str:
        return _timestamp(self._clock())

    @staticmethod
    def _touch(db: Database, conversation_id: str, now: str) -> None:
        db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", [now, conversation_id])

    # -- images ---------------------------------------------------------------------------

    def put_image(self, blob: ImageBlob) -> str:
        """Store cleaned image bytes once; returns their sha256."""
        if not blob.data:
            raise InvalidRequest("The image is empty.")
        if blob.width <= 0 or blob.height <= 0:
            raise InvalidRequest("The image has no size.")
        try:
            images.extension(blob.format)
        except ValueError as error:
            raise InvalidRequest(str(error)) from None
        sha = images.sha256_of(blob.data)
        now = self._now()
        with self._image_lock:
            try:
                images.write_image(self.images_dir, sha, blob.format, blob.data)
            except OSError as error:
                if _is_full(error):
                    raise OutOfSpace(NO_SPACE) from error
                raise
            with self._write() as db:
                db.execute(
                    """
                    INSERT INTO images
                        (sha256, format, width, height, byte_size, created_at, stored_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (sha256) DO UPDATE SET stored_at = excluded.stored_at
                    """,
                    [sha, blob.format.upper(), blob.width, blob.height, len(blob.data), now, now],
                )
        return sha

    def image_info(self, sha256: str) -> ImageInfo:
        rows = list(self._db().query("SELECT * FROM images WHERE sha256 = ?", [sha256]))
        if not rows:
            raise NotFound("No such image.")
        row = rows[0]
        return ImageInfo(
            sha256=row["sha256"],
            format=row["format"],
            width=row["width"],
            height=row["height"],
            byte_size=row["byte_size"],
        )

    def image_path(self, sha256: str) -> Path:
        info = self.image_info(sha256)
        return images.image_file(self.images_dir, info.sha256, info.format)

    # -- writing a conversation -----------------------------------------------------------

    def create_conversation(self, client_key: str, title: str = "", *, consent_version: str) -> str:
        """Start a conversation; only call once the user has consented to `consent_version`."""
        owner = client_hash(client_key)
        if not isinstance(consent_version, str) or not consent_version.strip():
            raise InvalidRequest("A consent version is required to store a conversation.")
        conversation_id = new_id()
        now = self._now()
        with self._write() as db:
            db["conversations"].insert(
                {
                    "id": conversation_id,
                    "client_hash": owner,
                    "title": title.strip(),
                    "consent_version": consent_version.strip(),
                    "consented_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        return conversation_id

    def rename_conversation(self, client_key: str, conversation_id: str, title: str) -> None:
        owner = client_hash(client_key)
        with self._write() as db:
            self._conversation_row(db, owner, conversation_id)
            db.execute(
                "UPDATE conversations SET title = ?, updated_at = ? WHERE id = ?",
                [title.strip(), self._now(), conversation_id],
            )

    def add_user_message(
        self,
        client_key: str,
        conversation_id: str,
        *,
        text: str,
        image_shas: Sequence[str] = (),
        parent_id: str | None = None,
    ) -> str:
        """Commit a question (and which stored images it shows, in order) before answering.

        `parent_id` is the answer the question follows, or None for an opening question.
        """
        owner = client_hash(client_key)
        if not text.strip() and not image_shas:
            raise InvalidRequest("The question is empty.")
        message_id = new_id()
        now = self._now()
        with self._write() as db:
            self._conversation_row(db, owner, conversation_id)
            if parent_id is not None:
                parent = self._message_row(db, owner, parent_id)
                if parent["conversation_id"] != conversation_id or parent["role"] != "assistant":
                    raise InvalidRequest("A question must follow an answer of its conversation.")
            for sha in image_shas:
                if db.execute("SELECT 1 FROM images WHERE sha256 = ?", [sha]).fetchone() is None:
                    raise NotFound("An image of this question is no longer stored; add it again.")
            db["messages"].insert(
                {
                    "id": message_id,
                    "conversation_id": conversation_id,
                    "parent_id": parent_id,
                    "role": "user",
                    "origin": "user",
                    "text": text,
                    "reasoning": "",
                    "status": "done",
                    "created_at": now,
                    "updated_at": now,
                }
            )
            db["message_images"].insert_all(
                {"message_id": message_id, "position": position, "image_sha": sha}
                for position, sha in enumerate(image_shas)
            )
            self._touch(db, conversation_id, now)
        return message_id

    def start_answer(
        self, client_key: str, conversation_id: str, *, parent_id: str, meta: AnswerMeta
    ) -> str:
        """Create the answer row (status "streaming") for the question `parent_id`."""
        owner = client_hash(client_key)
        if meta.side not in (None, "A", "B"):
            raise InvalidRequest("A comparison side is 'A' or 'B'.")
        try:
            sampling = json.dumps(dict(meta.sampling), sort_keys=True)
        except (TypeError, ValueError):
            raise InvalidRequest("Sampling settings must be JSON values.") from None
        answer_id = new_id()
        now = self._now()
        with self._write() as db:
            self._conversation_row(db, owner, conversation_id)
            parent = self._message_row(db, owner, parent_id)
            if parent["conversation_id"] != conversation_id or parent["role"] != "user":
                raise InvalidRequest("An answer must follow a question of its conversation.")
            db["messages"].insert(
                {
                    "id": answer_id,
                    "conversation_id": conversation_id,
                    "parent_id": parent_id,
                    "role": "assistant",
                    "origin": "generated",
                    "text": "",
                    "reasoning": "",
                    "status": "streaming",
                    "model_id": meta.model_id,
                    "revision": meta.revision,
                    "quantization": meta.quantization,
                    "adapter": meta.adapter,
                    "thinking": int(meta.thinking),
                    "thinking_budget": meta.thinking_budget,
                    "sampling": sampling,
                    "seed": meta.seed,
                    "compare_group": meta.compare_group,
                    "side": meta.side,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            self._touch(db, conversation_id, now)
        return answer_id

    def save_partial(self, answer_id: str, *, text: str, reasoning: str = "") -> bool:
        """Replace the streamed-so-far text of an answer still streaming.

        Returns False when the answer no longer takes writes (finished, recovered, or its
        conversation deleted meanwhile), so the caller can stop saving.
        """
        with self._write() as db:
            cursor = db.execute(
                """
                UPDATE messages SET text = ?, reasoning = ?, updated_at = ?
                WHERE id = ? AND status = 'streaming'
                """,
                [text, reasoning, self._now(), answer_id],
            )
            return cursor.rowcount == 1

    def finish_answer(
        self, answer_id: str, *, text: str, reasoning: str = "", stats: AnswerStats
    ) -> bool:
        """Store the final text and stats and mark the answer done; False as in save_partial."""
        if stats.finish_reason not in FINISH_REASONS:
            raise InvalidRequest(f"Unknown finish reason {stats.finish_reason!r}.")
        for name in ("reasoning_tokens", "answer_tokens"):
            value = getattr(stats, name)
            if not isinstance(value, int) or not 0 <= value <= _MAX_INTEGER:
                raise InvalidRequest(f"{name} must be a count, not {value!r}.")
        if stats.seed is not None and not -_MAX_INTEGER - 1 <= stats.seed <= _MAX_INTEGER:
            raise InvalidRequest(f"The seed {stats.seed} is out of range.")
        now = self._now()
        with self._write() as db:
            cursor = db.execute(
                """
                UPDATE messages SET
                    text = ?, reasoning = ?, status = 'done',
                    reasoning_tokens = ?, answer_tokens = ?, time_to_first_token_s = ?,
                    duration_s = ?, finish_reason = ?, error = ?, budget_exhausted = ?,
                    seed = COALESCE(?, seed), updated_at = ?
                WHERE id = ? AND status = 'streaming'
                """,
                [
                    text,
                    reasoning,
                    stats.reasoning_tokens,
                    stats.answer_tokens,
                    stats.time_to_first_token_s,
                    stats.duration_s,
                    stats.finish_reason,
                    stats.error,
                    int(stats.budget_exhausted),
                    stats.seed,
                    now,
                    answer_id,
                ],
            )
            if cursor.rowcount != 1:
                return False
            db.execute(
                """
                UPDATE conversations SET updated_at = ?
                WHERE id = (SELECT conversation_id FROM messages WHERE id = ?)
                """,
                [now, answer_id],
            )
            return True

    def recover(self) -> int:
        """Mark answers left "streaming" by a crash as interrupted; returns how many."""
        with self._write() as db:
            cursor = db.execute(
                """
                UPDATE messages SET status = 'done', finish_reason = 'interrupted', updated_at = ?
                WHERE status = 'streaming'
                """,
                [self._now()],
            )
            return cursor.rowcount

    # -- feedback -------------------------------------------------------------------------

    def _insert_feedback(self, db: Database, owner: str, row: dict, conversation_id: str) -> str:
        feedback_id = new_id()
        now = self._now()
        db["feedback"].insert(
            {
                "id": feedback_id,
                "conversation_id": conversation_id,
                "client_hash": owner,
                "created_at": now,
                **row,
            }
        )
        self._touch(db, conversation_id, now)
        return feedback_id

    def add_feedback(
        self,
        client_key: str,
        message_id: str,
        kind: str,
        *,
        reasons: Sequence[str] = (),
        comment: str | None = None,
        other_message_id: str | None = None,
    ) -> str:
        """Record a vote ("like", "dislike", "clear") on an answer, or a verdict on two sibling
        answers ("tie", "both_bad", with `other_message_id`). Returns the feedback id.

        Picks and edits have their own methods: `add_pick`, `add_edit`.
        """
        owner = client_hash(client_key)
        if kind == "pick":
            raise InvalidRequest("Record a pick with add_pick.")
        if kind == "edit":
            raise InvalidRequest("Record an edit with add_edit.")
        if kind not in VOTE_KINDS and kind not in PAIR_KINDS:
            raise InvalidRequest(f"Unknown feedback kind {kind!r}.")
        if isinstance(reasons, str) or not all(isinstance(r, str) for r in reasons):
            raise InvalidRequest("Reasons are a list of strings.")
        with self._write() as db:
            if kind in VOTE_KINDS:
                if other_message_id is not None:
                    raise InvalidRequest(f"A {kind} concerns one answer.")
                target = self._answer_row(db, owner, message_id)
            else:
                if other_message_id is None:
                    raise InvalidRequest(f"A {kind} concerns two answers.")
                target = self._answer_pair(db, owner, message_id, other_message_id)
            return self._insert_feedback(
                db,
                owner,
                {
                    "message_id": message_id,
                    "kind": kind,
                    "reasons": json.dumps(list(reasons)) if reasons else None,
                    "comment": comment or None,
                    "other_message_id": other_message_id,
                },
                target["conversation_id"],
            )

    def add_pick(self, client_key: str, chosen_id: str, other_id: str, left_id: str) -> str:
        """Record that `chosen_id` was preferred to its sibling `other_id`; `left_id` is the
        one that was shown on the left. Returns the feedback id."""
        owner = client_hash(client_key)
        if left_id not in (chosen_id, other_id):
            raise InvalidRequest("The left answer must be one of the two compared.")
        with self._write() as db:
            target = self._answer_pair(db, owner, chosen_id, other_id)
            return self._insert_feedback(
                db,
                owner,
                {
                    "message_id": chosen_id,
                    "kind": "pick",
                    "other_message_id": other_id,
                    "left_message_id": left_id,
                },
                target["conversation_id"],
            )

    def add_edit(self, client_key: str, message_id: str, text: str) -> str:
        """Store a user's correction of an answer as a new sibling answer (origin "edit")
        and an "edit" feedback event on the original. Returns the new message id."""
        owner = client_hash(client_key)
        if not text.strip():
            raise InvalidRequest("The corrected answer is empty.")
        edit_id = new_id()
        now = self._now()
        with self._write() as db:
            original = self._answer_row(db, owner, message_id)
            if original["status"] != "done":
                raise InvalidRequest("Wait for the answer to finish before correcting it.")
            db["messages"].insert(
                {
                    "id": edit_id,
                    "conversation_id": original["conversation_id"],
                    "parent_id": original["parent_id"],
                    "role": "assistant",
                    "origin": "edit",
                    "corrects_id": message_id,
                    "text": text,
                    "reasoning": "",
                    "status": "done",
                    "created_at": now,
                    "updated_at": now,
                }
            )
            self._insert_feedback(
                db,
                owner,
                {"message_id": message_id, "kind": "edit", "edit_message_id": edit_id},
                original["conversation_id"],
            )
        return edit_id

    # -- reading --------------------------------------------------------------------------

    def list_conversations(self, client_key: str) -> list[ConversationSummary]:
        """This client's conversations, most recently active first."""
        owner = client_hash(client_key)
        rows = self._db().query(
            """
            SELECT c.id, c.title, c.created_at, c.updated_at,
                   (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id)
                       AS message_count
            FROM conversations c WHERE c.client_hash = ?
            ORDER BY c.updated_at DESC, c.id DESC
            """,
            [owner],
        )
        return [ConversationSummary(**row) for row in rows]

    def get_conversation(self, client_key: str, conversation_id: str) -> Conversation:
        owner = client_hash(client_key)
        with self._read() as db:
            row = self._conversation_row(db, owner, conversation_id)
            return _load_conversation(db, row)

    def iter_conversations(self, *, since: str | None = None) -> Iterator[Conversation]:
        """Every conversation of every client, oldest first, each read in one snapshot;
        `since` keeps those active at or after that timestamp. For export and operator
        tools only: it bypasses client keys."""
        db = self._db()
        sql = "SELECT id FROM conversations"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE updated_at >= ?"
            params.append(since)
        ids = [row["id"] for row in db.query(sql + " ORDER BY id", params)]
        for conversation_id in ids:
            with self._read() as db:
                rows = list(db.query("SELECT * FROM conversations WHERE id = ?", [conversation_id]))
                if rows:
                    conversation = _load_conversation(db, rows[0])
                else:
                    continue  # deleted since the id list was read
            yield conversation

    def stats(self) -> StoreStats:
        with self._read() as db:

            def scalar(sql: str) -> int:
                return db.execute(sql).fetchone()[0]

            def grouped(sql: str) -> dict[str, int]:
                return {key: count for key, count in db.execute(sql).fetchall()}

            return StoreStats(
                conversations=scalar("SELECT count(*) FROM conversations"),
                clients=scalar("SELECT count(DISTINCT client_hash) FROM conversations"),
                user_messages=scalar("SELECT count(*) FROM messages WHERE role = 'user'"),
                answers=scalar("SELECT count(*) FROM messages WHERE origin = 'generated'"),
                images=scalar("SELECT count(*) FROM images"),
                answers_by_finish_reason=grouped(
                    """
                    SELECT finish_reason, count(*) FROM messages
                    WHERE origin = 'generated' AND status = 'done'
                    GROUP BY finish_reason ORDER BY finish_reason
                    """
                ),
                feedback_by_kind=grouped(
                    "SELECT kind, count(*) FROM feedback GROUP BY kind ORDER BY kind"
                ),
                feedback_per_day=grouped(
                    """
                    SELECT substr(created_at, 1, 10) AS day, count(*) FROM feedback
                    GROUP BY day ORDER BY day
                    """
                ),
            )

    def data_snapshot(self) -> dict[str, Any]:
        """Counts of what is stored now, and the latest feedback event's id and time, read
        in one snapshot: what tells two evaluations (or two trained adapters) apart by the
        data they were computed on."""
        with self._read() as db:

            def scalar(sql: str) -> int:
                return db.execute(sql).fetchone()[0]

            latest = db.execute(
                "SELECT id, created_at FROM feedback ORDER BY created_at DESC, id DESC LIMIT 1"
            ).fetchone()
            return {
                "conversations": scalar("SELECT count(*) FROM conversations"),
                "answers": scalar("SELECT count(*) FROM messages WHERE role = 'assistant'"),
                "feedback": scalar("SELECT count(*) FROM feedback"),
                "latest_feedback_id": latest[0] if latest else None,
                "latest_feedback_at": latest[1] if latest else None,
            }

    # -- evaluation runs --------------------------------------------------------------------

    def add_evaluation_run(
        self,
        *,
        model_id: str,
        adapters: Mapping[str, str],
        split: str,
        eval_fraction: float,
        snapshot: Mapping[str, Any],
        metrics: Mapping[str, Any],
        duration_s: float | None = None,
    ) -> EvaluationRun:
        """Store one evaluation; returns it as it will be read back. `snapshot` and
        `metrics` must be JSON values without NaN or infinity."""
        row = {
            "id": new_id(),
            "created_at": self._now(),
            "model_id": model_id,
            "adapters": json.dumps(dict(adapters), sort_keys=True),
            "split": split,
            "eval_fraction": float(eval_fraction),
            # allow_nan=False: a NaN would be written as a bare token that JSON readers refuse.
            "snapshot": json.dumps(dict(snapshot), sort_keys=True, allow_nan=False),
            "metrics": json.dumps(dict(metrics), sort_keys=True, allow_nan=False),
            "duration_s": duration_s,
        }
        with self._write() as db:
            db["evaluation_runs"].insert(row)
        return _evaluation_run_from_row(row)

    def list_evaluation_runs(self, *, limit: int | None = None) -> list[EvaluationRun]:
        """Stored evaluations, newest first."""
        sql = "SELECT * FROM evaluation_runs ORDER BY created_at DESC, id DESC"
        params: list[Any] = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_evaluation_run_from_row(row) for row in self._db().query(sql, params)]

    # -- deleting -------------------------------------------------------------------------

    def delete_conversation(self, client_key: str, conversation_id: str) -> ErasureCounts:
        owner = client_hash(client_key)
        with self._image_lock, _erasing():
            with self._write() as db:
                self._conversation_row(db, owner, conversation_id)
                counts, removed = _erase(db, "id = ?", [conversation_id])
            self._after_erasure(removed)
        return counts

    def delete_user_data(self, client_key: str) -> ErasureCounts:
        """Erase every conversation, message and feedback event of this client, and every
        image file no one else refers to."""
        owner = client_hash(client_key)
        with self._image_lock, _erasing():
            with self._write() as db:
                counts, removed = _erase(db, "client_hash = ?", [owner])
            self._after_erasure(removed)
        return counts

    def withdraw_question(self, client_key: str, message_id: str) -> ErasureCounts:
        """Take back a question the model never answered: the question, its images no other
        message shows, and its conversation when nothing else is left in it.

        Nothing is removed from a question that has an answer (or anything else after it).
        A question already erased is nothing to withdraw."""
        owner = client_hash(client_key)
        with self._image_lock, _erasing():
            with self._write() as db:
                try:
                    row = self._message_row(db, owner, message_id)
                except NotFound:
                    return ErasureCounts()
                if row["role"] != "user":
                    raise InvalidRequest("Only a question can be withdrawn.")
                if db.execute("SELECT 1 FROM messages WHERE parent_id = ?",
                              [message_id]).fetchone() is not None:
                    raise InvalidRequest("This question has an answer; it stays.")
                shas = [sha for (sha,) in db.execute(
                    "DELETE FROM message_images WHERE message_id = ? RETURNING image_sha",
                    [message_id]).fetchall()]
                db.execute("DELETE FROM messages WHERE id = ?", [message_id])
                conversations = db.execute(
                    """
                    DELETE FROM conversations WHERE id = ?
                    AND NOT EXISTS (SELECT 1 FROM messages WHERE conversation_id = ?)
                    """,
                    [row["conversation_id"], row["conversation_id"]]).rowcount
                removed = _delete_unshown_images(db, shas)
            self._after_erasure(removed)
        return ErasureCounts(conversations=conversations, messages=1, images=len(removed))

    def purge_older_than(self, days: float, *, now: datetime | None = None) -> ErasureCounts:
        """Erase conversations whose last activity is more than `days` days before `now`,
        and images stored that long ago that nothing refers to."""
        if days < 0:
            raise InvalidRequest("Retention must be zero days or more.")
        cutoff = _timestamp((now or self._clock()) - timedelta(days=days))
        with self._image_lock:
            with self._write() as db:
                counts, removed = _erase(db, "updated_at < ?", [cutoff])
                unused = db.execute(
                    """
                    DELETE FROM images WHERE stored_at < ?
                    AND NOT EXISTS (SELECT 1 FROM message_images WHERE image_sha = sha256)
                    RETURNING sha256, format
                    """,
                    [cutoff],
                ).fetchall()
            removed += unused
            self._after_erasure(removed)
        return ErasureCounts(
            conversations=counts.conversations,
            messages=counts.messages,
            feedback=counts.feedback,
            images=counts.images + len(unused),
        )

    def _after_erasure(self, removed: list[tuple[str, str]]) -> None:
        """Remove the files of erased images, then fold the write-ahead log into the database
        and truncate it, so the erased text does not linger in old page copies there."""
        for sha, image_format in removed:
            images.remove_image(self.images_dir, sha, image_format)
        # Best effort: a reader still on an older snapshot lets the checkpoint finish only
        # partly; the next checkpoint completes it. The erasure has committed either way.
        try:
            self._db().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.DatabaseError:
            log.exception("checkpoint after an erasure failed")
        for callback in self._erasure_listeners:
            try:
                callback([sha for sha, _ in removed])
            except Exception:  # the erasure itself is done; a listener's failure is logged
                log.exception("an erasure listener failed")

    # -- backup ---------------------------------------------------------------------------

    def backup(self, dest_path: str | Path, *, images_dir: str | Path | None = None,
               verify_existing: bool = True, prune: bool = False) -> Path:
        """Write a consistent copy of the database to `dest_path` while others keep writing,
        then copy the image files it refers to into `images_dir` (default: an "images"
        folder beside `dest_path`).

        The database copy is one snapshot (SQLite's online backup in a single step), written to
        a temporary name and renamed. Image files never change once written, so copying them
        afterwards is safe; a file erased in between is skipped, as its erasure is what the
        user asked for. Each image is copied to a temporary name, checked against its sha256
        and renamed, so a copy cut short (the process killed, the disk full) never leaves a
        partial file under an image's name; an image already in the backup is kept only if its
        bytes still match its name, so running the backup again repairs a damaged one.
        Temporary files that an interrupted run left behind are removed. Raises StorageError,
        after copying everything else, if a source image no longer matches its hash.

        The copy is a single file (rollback journal, no WAL beside it). `verify_existing`
        False trusts an image already in the backup when its size matches (repeated snapshots
        then read only new images); `prune` removes images the copy no longer refers to, so
        erased images leave the backup too.
        """
        # Resolved: through ".." or a link, the database itself must not be the copy's name.
        dest = Path(dest_path).resolve()
        if dest == self.path.resolve() or (dest.exists() and dest.samefile(self.path)):
            raise InvalidRequest("A backup cannot overwrite the database it copies.")
        if dest.is_dir():
            raise InvalidRequest(f"{dest_path} is a folder: name the file to write.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        for leftover in dest.parent.glob(f".{dest.name}.*"):
            leftover.unlink(missing_ok=True)
        fd, temporary = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            target = sqlite3.connect(temporary)
            try:
                self._db().conn.backup(target)
                target.execute("PRAGMA journal_mode = DELETE")
            finally:
                target.close()
            os.replace(temporary, dest)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        dest_images = Path(images_dir) if images_dir else dest.parent / "images"
        if dest_images.resolve() != self.images_dir.resolve():
            copy = sqlite3.connect(dest)
            try:
                wanted = copy.execute("SELECT sha256, format FROM images").fetchall()
            finally:
                copy.close()
            images.remove_partial_copies(dest_images)
            damaged = [sha for sha, image_format in wanted
                       if not images.copy_verified(self.images_dir, dest_images, sha,
                                                   image_format, verify_existing)]
            if prune:
                images.remove_all_but(dest_images, {
                    images.image_file(dest_images, sha, image_format)
                    for sha, image_format in wanted})
            if damaged:
                raise StorageError(
                    f"{len(damaged)} stored image(s) no longer match their hash and were not "
                    f"backed up (first: {damaged[0]}); everything else was.")
        return dest


# -- helpers shared by the readers and erasers ------------------------------------------


def _is_full(error: BaseException) -> bool:
    if isinstance(error, sqlite3.DatabaseError):
        return getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL or (
            "disk is full" in str(error))
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def _erasing() -> Iterator[None]:
    """An erasure the disk had no room for says so in its own words."""
    try:
        yield
    except OutOfSpace as error:
        raise OutOfSpace(NO_SPACE_TO_ERASE) from error


def _erase(
    db: Database, conversation_filter: str, params: list[Any]
) -> tuple[ErasureCounts, list[tuple[str, str]]]:
    """Delete the conversations matching `conversation_filter` (an SQL condition on the
    conversations table) with everything in them, inside the caller's transaction.
    Returns the counts and the (sha256, format) of image rows no longer referenced, whose
    files the caller removes once the transaction has committed."""
    doomed = f"SELECT id FROM conversations WHERE {conversation_filter}"
    candidates = [
        row[0]
        for row in db.execute(
            f"""
            SELECT DISTINCT mi.image_sha FROM message_images mi
            JOIN messages m ON m.id = mi.message_id
            WHERE m.conversation_id IN ({doomed})
            """,
            params,
        ).fetchall()
    ]
    feedback = db.execute(f"DELETE FROM feedback WHERE conversation_id IN ({doomed})", params)
    feedback_count = feedback.rowcount
    db.execute(
        f"""
        DELETE FROM message_images WHERE message_id IN
            (SELECT id FROM messages WHERE conversation_id IN ({doomed}))
        """,
        params,
    )
    message_count = db.execute(
        f"DELETE FROM messages WHERE conversation_id IN ({doomed})", params
    ).rowcount
    conversation_count = db.execute(
        f"DELETE FROM conversations WHERE {conversation_filter}", params
    ).rowcount
    removed = _delete_unshown_images(db, candidates)
    counts = ErasureCounts(
        conversations=conversation_count,
        messages=message_count,
        feedback=feedback_count,
        images=len(removed),
    )
    return counts, removed


def _delete_unshown_images(db: Database, shas: Sequence[str]) -> list[tuple[str, str]]:
    """Delete the rows of those of `shas` no message shows any more; returns their
    (sha256, format), whose files the caller removes once the transaction has committed."""
    removed: list[tuple[str, str]] = []
    for sha in dict.fromkeys(shas):
        removed += db.execute(
            """
            DELETE FROM images WHERE sha256 = ?
            AND NOT EXISTS (SELECT 1 FROM message_images WHERE image_sha = ?)
            RETURNING sha256, format
            """,
            [sha, sha],
        ).fetchall()
    return removed


def _load_conversation(db: Database, row: dict) -> Conversation:
    conversation_id = row["id"]
    image_shas: dict[str, list[str]] = {}
    for link in db.query(
        """
        SELECT mi.message_id, mi.image_sha FROM message_images mi
        JOIN messages m ON m.id = mi.message_id
        WHERE m.conversation_id = ? ORDER BY mi.message_id, mi.position
        """,
        [conversation_id],
    ):
        image_shas.setdefault(link["message_id"], []).append(link["image_sha"])

    events = tuple(
        _feedback_from_row(feedback_row)
        for feedback_row in db.query(
            "SELECT * FROM feedback WHERE conversation_id = ? ORDER BY created_at, id",
            [conversation_id],
        )
    )
    votes: dict[str, Feedback | None] = {}
    comparisons: dict[str, Feedback] = {}
    for feedback in events:
        if feedback.kind in VOTE_KINDS:
            votes[feedback.message_id] = None if feedback.kind == "clear" else feedback
        elif feedback.kind in PAIR_KINDS:
            comparisons[feedback.message_id] = feedback
            if feedback.other_message_id is not None:
                comparisons[feedback.other_message_id] = feedback

    messages = tuple(
        _message_from_row(
            message_row,
            image_shas=tuple(image_shas.get(message_row["id"], ())),
            vote=votes.get(message_row["id"]),
            comparison=comparisons.get(message_row["id"]),
        )
        for message_row in db.query(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", [conversation_id]
        )
    )
    return Conversation(
        id=conversation_id,
        title=row["title"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        consent_version=row["consent_version"],
        consented_at=row["consented_at"],
        messages=messages,
        feedback=events,
    )


def _feedback_from_row(row: dict) -> Feedback:
    return Feedback(
        id=row["id"],
        message_id=row["message_id"],
        kind=row["kind"],
        created_at=row["created_at"],
        reasons=tuple(json.loads(row["reasons"])) if row["reasons"] else (),
        comment=row["comment"],
        other_message_id=row["other_message_id"],
        left_message_id=row["left_message_id"],
        edit_message_id=row["edit_message_id"],
    )


def _message_from_row(
    row: dict,
    *,
    image_shas: tuple[str, ...],
    vote: Feedback | None,
    comparison: Feedback | None,
) -> StoredMessage:
    meta = stats = None
    if row["origin"] == "generated":
        meta = AnswerMeta(
            model_id=row["model_id"],
            revision=row["revision"],
            quantization=row["quantization"],
            adapter=row["adapter"],
            thinking=bool(row["thinking"]),
            thinking_budget=row["thinking_budget"],
            sampling=json.loads(row["sampling"]) if row["sampling"] else {},
            seed=row["seed"],
            compare_group=row["compare_group"],
            side=row["side"],
        )
        if row["status"] == "done":
            stats = AnswerStats(
                reasoning_tokens=row["reasoning_tokens"] or 0,
                answer_tokens=row["answer_tokens"] or 0,
                time_to_first_token_s=row["time_to_first_token_s"],
                duration_s=row["duration_s"] or 0.0,
                finish_reason=row["finish_reason"],
                error=row["error"],
                seed=row["seed"],
                budget_exhausted=bool(row["budget_exhausted"]),
            )
    return StoredMessage(
        id=row["id"],
        conversation_id=row["conversation_id"],
        parent_id=row["parent_id"],
        role=row["role"],
        origin=row["origin"],
        text=row["text"],
        reasoning=row["reasoning"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        image_shas=image_shas,
        corrects_id=row["corrects_id"],
        meta=meta,
        stats=stats,
        vote=vote,
        comparison=comparison,
    )


def _evaluation_run_from_row(row: Mapping[str, Any]) -> EvaluationRun:
    return EvaluationRun(
        id=row["id"],
        created_at=row["created_at"],
        model_id=row["model_id"],
        adapters=json.loads(row["adapters"]),
        split=row["split"],
        eval_fraction=row["eval_fraction"],
        snapshot=json.loads(row["snapshot"]),
        metrics=json.loads(row["metrics"]),
        duration_s=row["duration_s"],
    )
