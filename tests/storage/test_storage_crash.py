"""A writer process killed mid-stream leaves a sound database with every committed turn."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from storage import Store

ROOT = Path(__file__).resolve().parents[2]
KEY = "crash-writer"
PARTIALS_BEFORE_KILL = 25

WRITER = textwrap.dedent(
    """
    import sys
    from storage import AnswerMeta, AnswerStats, Store

    store = Store(sys.argv[1])
    key = sys.argv[2]
    conversation = store.create_conversation(key, "crash", consent_version="v1")
    print("conversation", conversation, flush=True)
    parent = None
    for turn in range(3):
        question = store.add_user_message(key, conversation, text=f"question {turn}",
                                          parent_id=parent)
        parent = store.start_answer(key, conversation, parent_id=question,
                                    meta=AnswerMeta(model_id="tiny"))
        store.finish_answer(parent, text=f"answer {turn}", stats=AnswerStats(answer_tokens=2))
        print("turn", question, parent, flush=True)
    question = store.add_user_message(key, conversation, text="last question", parent_id=parent)
    streaming = store.start_answer(key, conversation, parent_id=question,
                                   meta=AnswerMeta(model_id="tiny"))
    print("streaming", question, streaming, flush=True)
    text = ""
    count = 0
    while True:
        count += 1
        text += f"token{count} "
        store.save_partial(streaming, text=text, reasoning="thinking")
        print("partial", count, flush=True)
    """
)


def test_a_killed_writer_leaves_committed_turns_and_an_interrupted_answer(tmp_path):
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), KEY],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Guard against a writer that hangs instead of printing; not a timing assertion.
    watchdog = threading.Timer(120, writer.kill)
    watchdog.start()
    lines: list[list[str]] = []
    try:
        while True:
            line = writer.stdout.readline()
            assert line, f"writer stopped early: {writer.stderr.read()}"
            lines.append(line.split())
            if lines[-1][0] == "partial" and int(lines[-1][1]) >= PARTIALS_BEFORE_KILL:
                break
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    finally:
        watchdog.cancel()
        writer.stdout.close()
        writer.stderr.close()
    assert writer.returncode == -signal.SIGKILL

    conversation = next(words[1] for words in lines if words[0] == "conversation")
    turns = [(words[1], words[2]) for words in lines if words[0] == "turn"]
    question, streaming = next((words[1], words[2]) for words in lines if words[0] == "streaming")
    last_acknowledged = int(lines[-1][1])

    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()

    store = Store(path)
    assert store.recovered == 1
    loaded = store.get_conversation(KEY, conversation)
    for number, (turn_question, turn_answer) in enumerate(turns):
        assert loaded.message(turn_question).text == f"question {number}"
        finished = loaded.message(turn_answer)
        assert (finished.text, finished.status, finished.stats.finish_reason) == (
            f"answer {number}",
            "done",
            "stop",
        )
    assert loaded.message(question).text == "last question"
    interrupted = loaded.message(streaming)
    assert (interrupted.status, interrupted.stats.finish_reason) == ("done", "interrupted")
    tokens = interrupted.text.split()
    # One whole partial save: every token acknowledged so far (the writer may have saved a
    # few more before the kill landed), in order, none torn.
    assert len(tokens) >= last_acknowledged
    assert tokens == [f"token{n}" for n in range(1, len(tokens) + 1)]
    assert interrupted.reasoning == "thinking"
    assert [m.id for m in loaded.path(streaming)][-2:] == [question, streaming]
    store.close()
