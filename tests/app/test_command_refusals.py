"""The command line's data commands (backup, export, train, evaluate) refuse a database path
that is not a database, and an output path they cannot write, in one line each: no
traceback, no empty database made at a mistyped path, nothing left behind, and the live
database never overwritten by its own backup."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import app
from storage import InvalidRequest, Store
from testing.data import COLORS, fill_colors


def _database(path: Path) -> Path:
    with Store(path) as store:
        fill_colors(store)
    return path


def _questions(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("select text from messages where role = 'user'")]


def _command(name: str, db: Path, tmp_path: Path) -> list[str]:
    out = str(tmp_path / "out" / "result")
    return {
        "backup": ["backup", out, "--db", str(db)],
        "export": ["export", "--db", str(db), "--format", "trl-dpo", "--out", out],
        "counts": ["export", "--db", str(db), "--counts"],
        "train": ["train", "--db", str(db), "--out", out],
        "evaluate": ["evaluate", "--db", str(db), "--model", "tiny-random", "--no-generate"],
    }[name]


def _refusal(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stopped:
        app.main(argv)
    assert stopped.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


COMMANDS = ["backup", "export", "counts", "train", "evaluate"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_mistyped_database_is_named_and_not_made(command, tmp_path, capsys):
    missing = tmp_path / "typo.db"
    err = _refusal(_command(command, missing, tmp_path), capsys)
    assert f"no database at {missing}" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_given_as_the_database_is_named(command, tmp_path, capsys):
    folder = tmp_path / "data"
    folder.mkdir()
    err = _refusal(_command(command, folder, tmp_path), capsys)
    assert f"{folder} is a folder" in err
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_file_that_is_not_a_database_is_named_and_left_as_it_was(command, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    text = "these are my notes, not a database\n" * 200
    notes.write_text(text)
    err = _refusal(_command(command, notes, tmp_path), capsys)
    assert f"{notes} cannot be opened as a database" in err
    assert notes.read_text() == text


@pytest.mark.parametrize("command", ["backup", "export", "train"])
def test_an_output_under_a_file_is_refused_in_a_line(command, tmp_path, capsys):
    db = _database(tmp_path / "live" / "studio.db")
    (tmp_path / "out").write_text("a file where a folder would go")
    argv = _command(command, db, tmp_path)
    if command == "train":
        # Enough data for the refusal to come from the folder, not from the data.
        argv += ["--method", "sft", "--min-examples", "1"]
    err = _refusal(argv, capsys)
    assert "annot write" in err and str(tmp_path / "out") in err


@pytest.mark.parametrize("how", ["dots", "link"])
def test_a_backup_never_overwrites_the_database_it_copies(how, tmp_path, capsys):
    db = _database(tmp_path / "live" / "studio.db")
    if how == "dots":
        (tmp_path / "live" / "sub").mkdir()
        dest = tmp_path / "live" / "sub" / ".." / "studio.db"
    else:
        dest = tmp_path / "link.db"
        dest.symlink_to(db)
    err = _refusal(["backup", str(dest), "--db", str(db)], capsys)
    assert "cannot overwrite the database it copies" in err
    assert "incomplete" not in err
    assert len(_questions(db)) == len(COLORS)
    with Store(db) as store, pytest.raises(InvalidRequest):
        store.backup(dest)


def test_the_server_refuses_a_database_that_is_not_one(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database")
    with pytest.raises(SystemExit) as stopped:
        app.main(["--model", "tiny-random", "--db", str(notes)])
    assert f"{notes} cannot be opened as a database" in str(stopped.value.code)
    assert notes.read_text() == "not a database"


def test_two_adapters_under_one_name_are_refused(tmp_path, capsys):
    """One would silently replace the other, and the page would offer only the last."""
    err = _refusal(["evaluate", "--db", str(_database(tmp_path / "studio.db")),
                    "--model", "tiny-random", "--adapter", f"a={tmp_path / 'one'}",
                    "--adapter", f"a={tmp_path / 'two'}"], capsys)
    assert "two adapters are named 'a'" in err


def test_counts_read_by_a_reader_that_stops_early_end_quietly(tmp_path):
    """`export --counts | head -1`: the rest has nowhere to go, and that is no error to
    report (before, it said it could not write an output that was never asked for)."""
    import os
    import subprocess
    import sys

    db = _database(tmp_path / "studio.db")
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        done = subprocess.run(
            [sys.executable, str(Path(app.__file__)), "export", "--db", str(db), "--counts"],
            stdout=write, stderr=subprocess.PIPE, text=True, timeout=300)
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == 1
