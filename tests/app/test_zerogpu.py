"""The app on a ZeroGPU Space: the real `spaces` package in its ZeroGPU mode, its device API
served on 127.0.0.1 by tests/app/zerogpu_api.py.

The package emulates CUDA in the app's process and runs each answer in a forked worker that it
attaches to a real GPU. Everything up to that attachment runs anywhere: the app starts, loads
the model onto the emulated GPU, asks the API for a GPU with the answer's duration and forks
the worker. Without a GPU the worker cannot start CUDA, and the visitor is told so; with one
(`gpu` marker) the answer is generated and stored.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.types import GenerationRequest, Message, Sampling
from engine.zerogpu import DEFAULT_MAX_NEW_TOKENS, gpu_seconds, on_zerogpu
from tests.app.zerogpu_api import ZeroGPUApi
from tests.page_actions import give_consent, open_page, submit_question


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.fixture
def zerogpu(tmp_path):
    """(environment for the app, the API) for a simulated ZeroGPU Space."""
    api = ZeroGPUApi().start()
    cgroup = tmp_path / "cgroup"
    cgroup.write_text("0::/zerogpu-test\n")
    env = {"SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": api.url,
           "ZEROGPU_PROC_SELF_CGROUP_PATH": str(cgroup),
           "ZEROGPU_OFFLOAD_DIR": str(tmp_path / "offload"),
           "ZEROGPU_MMAP_AUTOPRUNE_PATTERN": str(tmp_path / "no-such-cache" / "*"),
           "SPACE_ID": "team/studio", "VQA_STUDIO_PERSISTENT_ROOT": str(tmp_path / "none"),
           "VQA_STUDIO_PUBLIC": "0", "HF_HUB_OFFLINE": "1"}
    yield env, api
    api.stop()


def _rows(db_path, question: str) -> list[tuple]:
    if not db_path.exists():
        return []
    with sqlite3.connect(db_path) as db:
        return db.execute(
            "select a.status, a.finish_reason, a.text from messages q join messages a "
            "on a.parent_id = q.id where q.text = ?", (question,)).fetchall()


def test_zerogpu_is_recognised_where_the_space_says_so_and_the_package_is_there():
    assert on_zerogpu({}) is False
    assert on_zerogpu({"SPACES_ZERO_GPU": "false"}) is False
    assert on_zerogpu({"SPACES_ZERO_GPU": "true"}) is True


def test_each_answer_asks_for_the_gpu_time_its_length_needs_and_no_more():
    def request(tokens: int) -> GenerationRequest:
        return GenerationRequest((Message("user", "hi"),),
                                 sampling=Sampling(max_new_tokens=tokens))

    assert gpu_seconds(request(64)) < gpu_seconds(request(1024)) < gpu_seconds(request(4096))
    # The app's own limit bounds what a request can ask for.
    assert gpu_seconds(request(4096), max_new_tokens_limit=1024) == gpu_seconds(request(1024))
    # A default-length answer fits twice into an anonymous visitor's two minutes a day.
    assert 2 * gpu_seconds(request(DEFAULT_MAX_NEW_TOKENS)) <= 120


def test_a_zerogpu_space_defaults_to_answers_its_quota_allows(zerogpu):
    import app as studio_app

    env, _ = zerogpu
    settings = studio_app.settings_from([], env)
    assert settings.max_new_tokens_limit == DEFAULT_MAX_NEW_TOKENS
    assert settings.quantize == "none"
    told = studio_app.settings_from(["--max-new-tokens-limit", "4096"], env)
    assert told.max_new_tokens_limit == 4096


@pytest.mark.browser
def test_the_default_model_is_chosen_without_breaking_zerogpu(launch_app, zerogpu, page):
    """--model auto reads the (emulated) GPU after `spaces` is imported, not before."""
    env, api = zerogpu
    app = launch_app("--model", "auto", env=env)
    page.goto(app.url)
    # Offline with nothing cached, the 70 GB slice's choice cannot load; the page says which.
    page.wait_for_selector("#model-status:has-text('Qwen/Qwen3.5-9B')", timeout=120_000)
    assert api.wait_for("/startup-report") and "CUDA has been initialized" not in app.log()


@pytest.mark.browser
def test_a_zerogpu_space_loads_the_model_and_asks_for_a_gpu_per_answer(launch_app, zerogpu,
                                                                      page):
    env, api = zerogpu
    app = launch_app(env=env)
    open_page(page, app)
    assert "2 min without a Hugging Face login" in page.locator("#gpu-quota-note").inner_text()
    assert "Low-level CUDA init" not in app.log()
    give_consent(page)
    submit_question(page, "zerogpu: answered?")

    scheduled = api.wait_for("/schedule")
    assert scheduled, app.log()
    # The page's default answer length, within the Space's limit.
    expected = gpu_seconds(GenerationRequest(
        (Message("user", "x"),), sampling=Sampling(max_new_tokens=DEFAULT_MAX_NEW_TOKENS)))
    assert int(scheduled[0]["durationSeconds"]) == expected
    # The package attaches a forked worker, not the app's own process, to the GPU.
    allowed = api.wait_for("/allow")
    assert allowed and int(allowed[0]["pid"]) not in (app.process.pid, os.getpid())
    released = api.wait_for("/release")
    assert released, app.log()

    if _has_gpu():
        deadline = time.monotonic() + 120
        rows = _rows(app.db_path, "zerogpu: answered?")
        while time.monotonic() < deadline and not (rows and rows[0][0] != "streaming"):
            time.sleep(0.3)
            rows = _rows(app.db_path, "zerogpu: answered?")
        assert rows, app.log()
        status, _, text = rows[0]
        assert status == "done" and released[0]["fail"] == "false" and text
    else:
        # No GPU to attach: the worker fails to start CUDA and the GPU is released as failed.
        # The visitor is told; like any request the engine ended before its first token, the
        # question stays in the box and nothing is stored.
        assert released[0]["fail"] == "true"
        page.get_by_test_id("toast-text").get_by_text(
            "The GPU lent for this answer failed").wait_for(timeout=30_000)
        assert _rows(app.db_path, "zerogpu: answered?") == []


def _answer(env: dict | None = None) -> tuple[dict, str]:
    """Run tests/app/zerogpu_answer.py (the app's engine path without the page)."""
    ran = subprocess.run([sys.executable, str(Path(__file__).with_name("zerogpu_answer.py"))],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, **(env or {})})
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout.strip().splitlines()[-1]), ran.stderr


def test_an_answer_runs_in_a_worker_the_package_forks_and_attaches_to_the_gpu():
    result, stderr = _answer()
    assert result["device"] == "cuda" and result["quantization"] == "none"
    (schedule, allow, release) = result["calls"]
    assert [schedule[0], allow[0], release[0]] == ["/schedule", "/allow", "/release"]
    sixteen = GenerationRequest((Message("user", "x"),), sampling=Sampling(max_new_tokens=16))
    assert int(schedule[1]["durationSeconds"]) == gpu_seconds(sixteen)
    assert int(allow[1]["pid"]) != result["pid"]
    if _has_gpu():
        assert release[1]["fail"] == "false", stderr
        assert result["answer_tokens"] == 16 and result["answer"], stderr
    else:
        assert release[1]["fail"] == "true"
        assert result["finish_reason"] == "error"
        assert result["error"].startswith("The GPU lent for this answer failed")
        assert "Error" not in result["error"]  # no exception class shown to a visitor


def test_an_answer_over_the_visitors_quota_is_refused_with_zerogpus_reason():
    sixteen = GenerationRequest((Message("user", "x"),), sampling=Sampling(max_new_tokens=16))
    result, stderr = _answer({"ZEROGPU_TEST_QUOTA_LEFT": str(gpu_seconds(sixteen) - 1)})
    # Refused before any GPU is attached; the visitor reads why.
    assert [path for path, _ in result["calls"]] == ["/schedule"], stderr
    assert result["finish_reason"] == "error" and result["answer"] == ""
    assert result["error"].startswith("ZeroGPU quota exceeded: ")


@pytest.mark.gpu
@pytest.mark.skipif(not _has_gpu(), reason="needs a CUDA GPU")
def test_stop_ends_the_answer_in_the_worker_with_its_real_count():
    """The answer runs in the worker the package forks; Stop, pressed in the app's process,
    must still end it there (tests/engine/test_zerogpu_stop.py checks the same on a CPU,
    with a fork of its own)."""
    result, stderr = _answer({"ZEROGPU_TEST_STOP": "1"})
    assert result["finish_reason"] == "cancelled", stderr
    assert 0 < result["answer_tokens"] < 400, stderr
    assert result["calls"][-1][1]["fail"] == "false", stderr
