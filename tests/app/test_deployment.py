"""Settings from flags and the environment, Space detection, persistence, pushes (ZeroGPU:
test_zerogpu.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import app as studio_app
from testing.app import wait_for_model
from testing.processes import children_of, process_alive
from testing.waiting import wait_until
from tests.page_actions import give_consent, open_page, submit_question, wait_for_finished_answer


def test_environment_sets_every_flag_and_flags_win():
    environ = {"VQA_STUDIO_MODEL": "tiny-random", "VQA_STUDIO_PORT": "9000",
               "VQA_STUDIO_SHARE": "true", "VQA_STUDIO_ADAPTER": "a=/x, b=/y",
               "VQA_STUDIO_MAX_UPLOAD_MB": "5"}
    settings = studio_app.settings_from([], environ)
    assert settings.model == "tiny-random" and settings.port == 9000 and settings.share
    assert settings.adapter == ("a=/x", "b=/y") and settings.max_upload_mb == 5
    settings = studio_app.settings_from(["--port", "9100", "--model", "other"], environ)
    assert settings.port == 9100 and settings.model == "other"


def test_a_space_is_public_by_default_unless_told_otherwise():
    assert studio_app.settings_from([], {"SPACE_ID": "team/studio"}).public is True
    assert studio_app.settings_from([], {}).public is False
    told = studio_app.settings_from([], {"SPACE_ID": "team/studio", "VQA_STUDIO_PUBLIC": "0"})
    assert told.public is False


def test_a_share_link_or_an_open_address_is_public_unless_told_otherwise():
    """Everyone's data is in the data tab: strangers reaching it need the password."""
    assert studio_app.settings_from(["--share"], {}).public is True
    assert studio_app.settings_from(["--host", "0.0.0.0"], {}).public is True
    assert studio_app.settings_from([], {"GRADIO_SERVER_NAME": "192.168.1.20"}).public is True
    for host in ("127.0.0.1", "localhost", "::1"):
        assert studio_app.settings_from(["--host", host], {}).public is False
    told = studio_app.settings_from(["--share"], {"VQA_STUDIO_PUBLIC": "0"})
    assert told.public is False


def test_batch_limits_reach_the_engine_and_zerogpu_turns_batching_off():
    settings = studio_app.settings_from(["--model", "tiny-random", "--max-batch-tokens", "999"],
                                        {"VQA_STUDIO_MAX_BATCH": "4"})
    engine = studio_app.build_engine(settings, in_process=True)
    assert engine.batch_limits.max_batch_size == 4 and engine.concurrency == 4
    assert engine.batch_limits.max_batch_tokens == 999
    assert studio_app.build_engine(settings, batching=False).concurrency == 1


def test_the_local_model_runs_in_a_process_of_its_own_unless_told_otherwise():
    from engine.local import LocalEngine
    from engine.process import ProcessEngine

    settings = studio_app.settings_from(["--model", "tiny-random"], {})
    assert isinstance(studio_app.build_engine(settings), ProcessEngine)
    assert studio_app.build_engine(settings).concurrency == settings.max_batch
    told = studio_app.settings_from(["--model", "tiny-random"], {"VQA_STUDIO_IN_PROCESS": "1"})
    assert isinstance(studio_app.build_engine(told), LocalEngine)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_the_model_process_ends_with_the_app_however_it_ends(app_launcher, tmp_path, how):
    app = app_launcher(tmp_path)
    wait_for_model(app)
    models = [pid for pid in children_of(app.process.pid)
              if b"engine.process" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(models) == 1
    os.kill(app.process.pid, how)
    app.process.wait()
    assert wait_until(lambda: not process_alive(models[0]), timeout=60), app.log_tail()


@pytest.mark.parametrize("argv", [["--engine", "openai"], ["--quantize", "3bit"],
                                  ["--adapter", "no-equals-sign"], ["--max-batch", "0"]])
def test_bad_settings_are_refused_with_a_message(argv, capsys):
    with pytest.raises(SystemExit):
        studio_app.settings_from(argv, {})
    assert "error" in capsys.readouterr().err


def test_persistent_storage_holds_snapshots_while_the_live_database_stays_local(tmp_path):
    from storage import Store
    from storage.snapshots import take_snapshot

    mounted = tmp_path / "data"
    mounted.mkdir()
    settings = studio_app.settings_from(["--persistent-root", str(mounted)], {})
    assert settings.persistent
    assert settings.snapshot_dir == mounted / "vqa-studio"
    # The mount moves nothing: the live database is where it would be without one.
    assert settings.db_path == studio_app.settings_from([], {}).db_path
    assert not settings.db_path.is_relative_to(mounted)
    # What the app snapshots for these settings lands on the mount, beside no live database.
    live = studio_app.settings_from(
        ["--persistent-root", str(mounted), "--db", str(tmp_path / "local" / "studio.db")], {})
    with Store(live.db_path) as store:
        copy = take_snapshot(store, live.snapshot_dir)
    assert copy.is_relative_to(mounted) and copy.exists()
    assert live.db_path.exists() and not live.db_path.is_relative_to(mounted)
    missing = studio_app.settings_from(["--persistent-root", str(tmp_path / "nope")], {})
    assert not missing.persistent and missing.snapshot_dir is None


def test_push_exports_uploads_each_format_of_consented_data(tmp_path):
    from exports.push import push_exports
    from storage import Store
    from testing.data import KEY, answer, ask

    uploads = []

    def upload(folder, repo_id, message, token):
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        uploads.append((repo_id, message, token, files))

    with Store(tmp_path / "studio.db") as store:
        conversation, question = ask(store, KEY, "q?")
        good = answer(store, KEY, conversation, question, "good")
        bad = answer(store, KEY, conversation, question, "bad")
        store.add_pick(KEY, good, bad, good)
        message = push_exports(store, "team/data", "hf_token", ["swift-dpo", "trl-dpo"],
                               upload=upload)
    (repo, sent_message, token, files) = uploads[0]
    assert repo == "team/data" and token == "hf_token" and sent_message == message
    assert any(f.startswith("swift-dpo/") and f.endswith(".jsonl") for f in files)
    assert any(f.startswith("trl-dpo/") and f.endswith(".parquet") for f in files)


@pytest.mark.browser
def test_a_space_restarted_on_an_empty_disk_gets_its_data_back_from_the_snapshot(
        launch_app, tmp_path, page):
    from PIL import Image

    mounted = tmp_path / "mounted"
    mounted.mkdir()
    env = {"SPACE_ID": "team/studio", "VQA_STUDIO_PERSISTENT_ROOT": str(mounted),
           "VQA_STUDIO_PUBLIC": "0"}
    picture = tmp_path / "picture.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(picture)
    app = launch_app("--max-new-tokens-limit", "16", env=env)
    open_page(page, app)
    assert page.locator("#storage-warning").count() == 0
    give_consent(page)
    submit_question(page, "space: kept?", image=picture)
    wait_for_finished_answer(page)
    deadline = time.monotonic() + 60
    while not _answered(app.db_path, "space: kept?") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert _answered(app.db_path, "space: kept?"), app.log()
    app.stop()  # SIGTERM, as a Space sends: the last snapshot is taken on the way out

    snapshot = mounted / "vqa-studio" / "studio.db"
    assert _answered(snapshot, "space: kept?"), app.log()
    assert not list(mounted.rglob("*-wal")) and not list(mounted.rglob("*-shm"))

    # A new machine: the local disk is empty, the mounted storage is not.
    local = app.db_path.parent
    shutil.rmtree(local)
    again = launch_app("--max-new-tokens-limit", "16", env=env)
    open_page(page, again)
    assert again.db_path == app.db_path and _answered(again.db_path, "space: kept?")
    with sqlite3.connect(again.db_path) as db:
        (sha,) = db.execute("select sha256 from images").fetchone()
    restored = next((local / "images").rglob(f"{sha}.*"))
    assert hashlib.sha256(restored.read_bytes()).hexdigest() == sha


def _answered(db_path, question: str) -> bool:
    """Whether `question` is stored with a finished answer."""
    if not db_path.exists():
        return False
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return bool(db.execute(
            "select 1 from messages q join messages a on a.parent_id = q.id "
            "where q.text = ? and a.status != 'streaming'", (question,)).fetchall())


@pytest.mark.browser
def test_a_space_without_persistent_storage_warns_on_the_page(launch_app, tmp_path, page):
    app = launch_app(env={"SPACE_ID": "team/studio",
                          "VQA_STUDIO_PERSISTENT_ROOT": str(tmp_path / "not-mounted")})
    page.goto(app.url)
    page.locator("#storage-warning").wait_for(timeout=60_000)
    assert "lost when it restarts" in page.locator("#storage-warning").inner_text()


def _run_app(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VQA_STUDIO_")}
    return subprocess.run([sys.executable, str(studio_app.APP_DIR / "app.py"), *argv],
                          env={**environment, **(env or {})}, capture_output=True, text=True,
                          timeout=120)


def test_help_lists_the_commands():
    shown = _run_app("--help")
    assert shown.returncode == 0
    for command in ("export", "evaluate", "backup"):
        assert f"\n  {command} " in shown.stdout


@pytest.mark.parametrize(("argv", "env", "named"), [
    ((), {"VQA_STUDIO_PORT": "abc"}, "VQA_STUDIO_PORT='abc'"),
    ((), {"VQA_STUDIO_SHARE": "yesplease"}, "VQA_STUDIO_SHARE='yesplease'"),
    ((), {"VQA_STUDIO_QUANTIZE": "3bit"}, "VQA_STUDIO_QUANTIZE"),
    (("--port", "x"), {}, "--port"),
    (("--port", "70000"), {}, "--port"),
    (("--max-upload-mb", "0"), {}, "--max-upload-mb"),
])
def test_a_bad_setting_stops_the_app_with_one_line_naming_it(argv, env, named):
    refused = _run_app(*argv, env=env)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "error" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr


def test_an_unset_boolean_variable_is_false_and_a_set_one_true():
    assert studio_app.settings_from([], {"VQA_STUDIO_SHARE": ""}).share is False
    assert studio_app.settings_from([], {"VQA_STUDIO_SHARE": "off"}).share is False
    assert studio_app.settings_from([], {"VQA_STUDIO_SHARE": "Yes"}).share is True


def test_gradio_hot_reload_says_what_to_run_instead():
    gradio_cli = Path(sys.executable).parent / "gradio"
    ran = subprocess.run([gradio_cli, "app.py"], cwd=studio_app.APP_DIR, capture_output=True,
                         text=True, timeout=120)
    assert "is not supported" in ran.stderr and "Run `python app.py`" in ran.stderr
    assert "Running on" not in ran.stdout


def test_an_erasure_pushes_the_exports_again_at_once(tmp_path, monkeypatch):
    """Each push replaces the last, so erased data leaves the repo with the next push; the app
    makes that push right after the erasure, not at the next scheduled time."""
    import exports.push
    from storage import Store
    from testing.data import KEY, ask

    pushed = threading.Event()
    monkeypatch.setattr(exports.push, "push_exports",
                        lambda store, repo, token: pushed.set())
    monkeypatch.setenv("HF_TOKEN", "hf_token")
    settings = studio_app.settings_from(["--push-repo", "team/data"], {})
    with Store(tmp_path / "studio.db") as store:
        conversation, _ = ask(store, KEY, "q?")
        pushing = studio_app.start_push(settings, store)
        try:
            assert not pushed.is_set()  # the first scheduled push is hours away
            store.delete_conversation(KEY, conversation)
            assert pushed.wait(timeout=30), "the erasure did not push the exports"
        finally:
            pushing.stop()


def test_a_hub_push_replaces_the_last_and_leaves_no_older_copy(tmp_path, monkeypatch):
    """What `hub_upload` asks of the Hub: the new files replace all of exports/, history is
    squashed, and the stored files only older commits used are deleted for good."""
    import huggingface_hub
    from huggingface_hub.hf_api import LFSFileInfo, RepoFile

    from exports.push import hub_upload

    calls = []

    class Hub:
        def __init__(self, token):
            calls.append(("token", token))

        def create_repo(self, repo_id, **options):
            calls.append(("create", repo_id, options["private"]))

        def upload_folder(self, **options):
            calls.append(("upload", options["path_in_repo"], options["delete_patterns"]))

        def super_squash_history(self, repo_id, **options):
            calls.append(("squash", repo_id))

        tree = [RepoFile(path="exports/trl-dpo/train.parquet", size=9, oid="b1",
                         lfs={"size": 9, "oid": "kept", "pointerSize": 130}),
                RepoFile(path="exports/trl-dpo/manifest.json", size=3, oid="b2")]

        def list_repo_tree(self, repo_id, **options):
            return self.tree

        def list_lfs_files(self, repo_id, **options):
            # Built from the Hub's answer, as huggingface_hub builds them.
            return [LFSFileInfo(fileOid=oid, filename="exports/x", oid=oid, size=1,
                                pushedAt="2026-12-01T00:00:00.000Z") for oid in ("kept", "erased")]

        def permanently_delete_lfs_files(self, repo_id, lfs_files, **options):
            calls.append(("delete", [lfs.file_oid for lfs in lfs_files]))

    monkeypatch.setattr(huggingface_hub, "HfApi", Hub)
    hub_upload(tmp_path, "team/data", "exports of today", "hf_token")
    assert calls == [("token", "hf_token"), ("create", "team/data", True),
                     ("upload", "exports", "*"), ("squash", "team/data"),
                     ("delete", ["erased"])]
    # A stored file listed without its sha256: nothing is deleted rather than a current one.
    Hub.tree = [*Hub.tree, RepoFile(path="exports/trl-kto/train.parquet", size=9, oid="b3",
                                    xetHash="x1")]
    calls.clear()
    hub_upload(tmp_path, "team/data", "exports of today", "hf_token")
    assert calls[-1] == ("squash", "team/data")
