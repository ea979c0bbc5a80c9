"""Shared pieces of the benchmarks: machine facts, tables, statistics, the app as a subprocess.

- `pin_threads()` keeps torch on one thread in this process and in every child started with
  `THREAD_ENV`; on two shared cores more threads make decode speed erratic, not faster.
- `running_app(model, workdir)` starts the real `python app.py` on a free loopback port with a
  database in `workdir`, waits until the page answers and the model is loaded, and stops the
  process on exit (`testing.app`, with the benchmarks' settings).
- `server_phases(url)`: Gradio's own timing of each event's phases (queue, preprocessing,
  the handler, postprocessing), from an app started with `PROFILING_ENV`.
- `tighten_client_polling(ms)`: gradio_client's reader thread looks for new server messages
  every 50 ms, so every time it reports lags the server by up to 50 ms. Streaming latency is
  what the overhead and concurrency benchmarks measure, so they shorten that wait.
- `app_client(url, "lean" | "stock")` is the `gradio_client.Client` those benchmarks ask
  with. "stock" is the library's default, which downloads every file named in every
  streamed update (the question's image, once per redraw) and opens a new connection for
  every request; "lean" downloads nothing and keeps its connections open, as a browser does,
  so that what is timed is the app's work rather than the client's. "push" is not
  gradio_client but `bench.push.PushClient`, which reads the event stream as a browser does.
- `upload_first(client, arguments)` uploads the files of a call before it is made, as a
  browser does when an image is attached, so that a timed call starts with the question.
- `print_machine()` and `print_table()` write Markdown that docs/benchmarks.md quotes as is.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

from testing import app as testing_app
from testing.app import RunningApp
from testing.processes import THREAD_ENV

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "transformers", "gradio", "gradio_client", "sqlite-utils", "pillow",
            "datasets")
APP_START_TIMEOUT_S = 300.0


def pin_threads(threads: int = 1) -> None:
    os.environ.update(THREAD_ENV)
    import torch

    torch.set_num_threads(threads)


def quiet_transformers() -> None:
    """No progress bars or notices about reference kernels in benchmark output."""
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def bench_cache_dir() -> Path:
    """Where benchmark checkpoints live: beside the tiny ones, under bench/."""
    from engine.tiny import default_cache_dir

    return default_cache_dir() / "bench"


# -- machine ---------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return math.nan


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def machine_lines() -> list[str]:
    versions = []
    for name in PACKAGES:
        with suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{name} {importlib.metadata.version(name)}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {cores} cores, {_cpu_model()}, {_ram_gib():.0f} GiB RAM",
        f"- python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; "
        + ", ".join(versions),
        f"- load average (1/5/15 min) at start: {load_average()}",
        f"- accelerator: {_gpu()}",
    ]


def _gpu() -> str:
    """The GPU the engines will use, or "none" (the models then run on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        return "none"
    props = torch.cuda.get_device_properties(0)
    return f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"


def print_machine(title: str) -> None:
    print(f"## {title}\n")
    print("\n".join(machine_lines()))
    print(flush=True)


# -- tables and statistics ---------------------------------------------------------------


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    print(f"### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join(" --- " for _ in headers) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    print(flush=True)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100); NaN for no values."""
    data = sorted(v for v in values if v is not None and not math.isnan(v))
    if not data:
        return math.nan
    position = (len(data) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.0f}"


def fixed(value: float, digits: int = 1) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


# -- inputs ------------------------------------------------------------------------------


def scene_image(path: Path, size: tuple[int, int] = (640, 480)) -> Path:
    """A deterministic photo-sized PNG with a few shapes and some text."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", size, (235, 235, 225))
    draw = ImageDraw.Draw(image)
    width, height = size
    draw.rectangle((width // 16, height // 12, width // 3, height // 2), fill=(200, 40, 40))
    draw.ellipse((width // 2, height // 3, width - width // 10, height - height // 8),
                 fill=(40, 60, 200))
    draw.line((0, height - 10, width, height // 2), fill=(30, 140, 60), width=6)
    draw.text((width // 12, height - height // 5), "VQA bench", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# -- the app as a subprocess ---------------------------------------------------------------


@contextmanager
def running_app(model: str, workdir: Path, *flags: str, threads: int = 1,
                root: Path = ROOT, env: dict | None = None) -> Iterator[RunningApp]:
    """`python app.py --model MODEL --quantize none` of the checkout at `root` on a free port,
    with its database under `workdir` and `env` added to its environment, once its model is
    loaded; stopped on exit."""
    threads_env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                   **(env or {})}
    with testing_app.running_app(workdir, "--quantize", "none", *flags, model=model,
                                 env=threads_env, program=[sys.executable, str(root / "app.py")],
                                 cwd=root, timeout=APP_START_TIMEOUT_S) as app:
        yield app


# Gradio times the phases of every event it runs when its environment says so, and serves
# the times under /gradio_api/profiling (`server_phases`).
PROFILING_ENV = {"GRADIO_PROFILING": "1"}
PHASES = ("queue_wait", "preprocess", "fn_call", "postprocess", "total")


def server_phases(url: str) -> dict[str, dict]:
    """Per event name, the median ms of each of Gradio's phases (`PHASES`) and the number of
    events (`n`), over the events the app started with `PROFILING_ENV` ran since the last
    call; the record is emptied."""
    import httpx

    base = url.rstrip("/") + "/gradio_api/profiling"
    traces = httpx.get(base + "/traces", timeout=CLIENT_TIMEOUT_S).json()
    httpx.post(base + "/clear", timeout=CLIENT_TIMEOUT_S)
    by_event: dict[str, list[dict]] = {}
    for trace in traces:
        by_event.setdefault(trace.get("fn_name") or "?", []).append(trace)
    return {name: {"n": len(events),
                   **{phase: percentile([e.get(f"{phase}_ms", 0.0) for e in events], 50)
                      for phase in PHASES}}
            for name, events in by_event.items()}


def tighten_client_polling(interval_ms: float) -> None:
    """Make gradio_client look for server messages every `interval_ms` instead of 50 ms.

    Its reader and cancel-check threads sleep 50 ms whenever no message is waiting, so a token
    streamed by the server reaches the caller up to 50 ms late. Only the sleeps inside
    gradio_client.utils are shortened; nothing else changes.
    """
    import gradio_client.utils as client_utils

    real_time = time
    limit = interval_ms / 1000

    class _ShortSleeps:
        def __getattr__(self, name: str):
            return getattr(real_time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            real_time.sleep(min(seconds, limit))

    client_utils.time = _ShortSleeps()


# -- the app's client ----------------------------------------------------------------------

# `PUSHED` is not gradio_client but `bench.push.PushClient`, pushed each message as a browser is.
PUSHED = "push"
CLIENTS = ("lean", "stock", PUSHED)
# Every Client fetches the app's page config when it connects, which took 8 s on a busy
# two-core machine, past httpx's 5 s default. Only a hung request waits this long.
CLIENT_TIMEOUT_S = 120.0
# The key in a Client's `httpx_kwargs` that names its connection pool (see `_PooledHttpx`).
_POOL = "connection_pool"
# Server paths of files `upload_first` uploaded, which gradio_client must not upload again.
_UPLOADED: set[str] = set()


class _PooledHttpx:
    """What gradio_client.client sees as `httpx`: the real module, except that a request given
    `connection_pool=` (an `httpx.Client`) goes through that client's open connections.

    gradio_client 2.x calls `httpx.post`, `httpx.get` and `httpx.stream` for every upload,
    question, heartbeat and download, and opens a new `httpx.Client` for every answer's event
    stream: each of those connects afresh. It passes its `httpx_kwargs` to all of them, but
    those module functions accept no transport or client to reuse, so the pool rides in
    `httpx_kwargs` and is taken out here. Clients made without it are untouched.
    """

    def __getattr__(self, name: str):
        import httpx

        return getattr(httpx, name)

    @staticmethod
    def _pooled(kwargs: dict):
        pool = kwargs.pop(_POOL, None)
        if pool is not None:
            kwargs.pop("verify", None)  # set once on the pool
            cookies = kwargs.pop("cookies", None)
            if cookies:
                pool.cookies.update(cookies)  # httpx deprecates cookies per request
        return pool

    def request(self, method: str, url, **kwargs):
        import httpx

        pool = self._pooled(kwargs)
        return (pool or httpx).request(method, url, **kwargs)

    def get(self, url, **kwargs):
        return self.request("GET", url, **kwargs)

    def post(self, url, **kwargs):
        return self.request("POST", url, **kwargs)

    def stream(self, method: str, url, **kwargs):
        import httpx

        pool = self._pooled(kwargs)
        return (pool or httpx).stream(method, url, **kwargs)

    def Client(self, **kwargs):  # noqa: N802 - stands in for httpx.Client
        import httpx

        pool = self._pooled(kwargs)
        return httpx.Client(**kwargs) if pool is None else _Borrowed(pool, kwargs)


class _Borrowed:
    """The pool, lent to a `with httpx.Client(...) as client:` block that would close its own
    client at the end: requests keep the block's timeout, and the pool stays open."""

    def __init__(self, pool, kwargs: dict):
        self.pool = pool
        self.timeout = kwargs.get("timeout")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def stream(self, method: str, url, **kwargs):
        if self.timeout is not None:
            kwargs.setdefault("timeout", self.timeout)
        return self.pool.stream(method, url, **kwargs)


def _patch_gradio_client() -> None:
    """Route gradio_client's requests through `_PooledHttpx`, and let files `upload_first`
    uploaded through as they are. Idempotent; clients without a pool behave as stock."""
    import gradio_client.client as client_module

    if isinstance(client_module.httpx, _PooledHttpx):
        return
    client_module.httpx = _PooledHttpx()
    upload = client_module.Endpoint._upload_file

    def upload_unless_uploaded(self, f: dict, data_index: int) -> dict:
        return f if f.get("path") in _UPLOADED else upload(self, f, data_index)

    client_module.Endpoint._upload_file = upload_unless_uploaded


@contextmanager
def app_client(url: str, kind: str = "lean"):
    """A `gradio_client.Client` for the app at `url`, closed (with its connections) on exit.

    "stock": the library's defaults but for a longer timeout. "lean": `download_files=False`
    (the outputs name the image on the server instead of fetching it after every update) and
    one `httpx.Client` whose connections every request of this client reuses.
    """
    import httpx
    from gradio_client import Client

    if kind == PUSHED:
        from bench.push import PushClient

        client = PushClient(url)
        try:
            yield client
        finally:
            client.close()
        return
    if kind not in CLIENTS:
        raise ValueError(f"client must be one of {CLIENTS}, not {kind!r}")
    _patch_gradio_client()
    with ExitStack() as stack:
        options: dict = {"timeout": CLIENT_TIMEOUT_S}
        if kind == "lean":
            options[_POOL] = stack.enter_context(httpx.Client(timeout=CLIENT_TIMEOUT_S))
        client = Client(url, verbose=False, httpx_kwargs=options,
                        **({"download_files": False} if kind == "lean" else {}))
        stack.callback(client.close)
        yield client


def upload_first(client, arguments: Sequence, api_name: str = "/chat") -> list:
    """`arguments` with their files uploaded to the app now, through the client's own upload.

    A browser uploads an image when it is attached, before the question is sent; a call made
    with what this returns skips gradio_client's upload (see `_patch_gradio_client`), so
    its time starts with the question. The app deletes an image once a question has taken
    it: upload again for every call.
    """
    from gradio_client.utils import is_file_obj_with_meta, traverse

    _patch_gradio_client()
    endpoint = client.endpoints[client._infer_fn_index(api_name, None)]
    # gradio_client's own steps before a call: a placeholder for each State input (so that
    # every argument lines up with its component), then every FileData uploaded.
    states = {i for i, kind in enumerate(endpoint.input_component_types) if kind.is_state}
    uploaded = endpoint.process_input_files(*endpoint.insert_empty_state(*arguments))

    def remember(file: dict) -> dict:
        _UPLOADED.add(file["path"])
        return file

    traverse(list(uploaded), remember, is_file_obj_with_meta)
    return [value for i, value in enumerate(uploaded) if i not in states]
