"""The real app as a child process: `python app.py` on a free loopback port.

`start_app(workdir, *flags)` starts it with a database under `workdir` (or where the app puts
one itself), waits until the page answers and returns a `RunningApp`; a child that exits or
never answers is stopped and reported with its log. `wait_for_model(app)` waits until the
model is loaded as well, asking the app's own /poll endpoint. `running_app(...)` is both, as a
context manager that stops the child on exit. The child's output goes to a log in `workdir`.

`loaded_status(family)` is the one rule for reading the app's model status line: it finds a
line that says the model (of that family) is loaded, in the Markdown /poll returns and in the
text the page shows alike, so Playwright can wait on it as it is (`testing.browser`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testing.processes import THREAD_ENV, free_port, stop_process

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300.0

# The app's model status line (ui/model_status.py) in its three states, as /poll returns it
# (the page shows the same without the ** of bold):
#   loading  ⏳ Loading **tiny-random**: Preparing the tiny random qwen3_5 checkpoint
#   failed   ⚠️ **The model could not be loaded.** <why>
#   loaded   **<model>** · qwen3_5 · none · thinks when asked · up to 4 images (...)
# The loading line can name the family too, so the family alone does not say "loaded".
LOADING_SIGN = "⏳"
LOAD_FAILED = "could not be loaded"


def loaded_status(family: str | None = None) -> re.Pattern[str]:
    """Finds a status line that says the model is loaded: the family (`family`, or any) between
    middle dots, and neither the loading sign nor the failure anywhere in it. Plain enough for
    Playwright to run in the page as it is."""
    name = re.escape(family) if family else r"[^\s·]+"
    return re.compile(rf"^(?![\s\S]*(?:{LOADING_SIGN}|{LOAD_FAILED}))[\s\S]* · {name} · ")


@dataclass
class RunningApp:
    url: str
    db_path: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    def stop(self) -> None:
        stop_process(self.process)


def wait_for_page(app: RunningApp, timeout: float = START_TIMEOUT_S) -> None:
    """Return once the page answers 200; raise with the log if the app exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.process.poll() is not None:
            raise RuntimeError(f"the app exited early:\n{app.log_tail()}")
        try:
            with urllib.request.urlopen(app.url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)  # polling a child that is still starting, not synchronising
    raise TimeoutError(f"the app did not come up:\n{app.log_tail()}")


def wait_for_model(app: RunningApp, timeout: float = START_TIMEOUT_S) -> None:
    """Return once the app's status line says its model is loaded (`loaded_status`)."""
    from gradio_client import Client

    deadline = time.monotonic() + timeout
    loaded = loaded_status()
    client = Client(app.url, verbose=False)
    try:
        while time.monotonic() < deadline:
            status = str(client.predict(api_name="/poll")[0])
            if loaded.search(status):
                return
            if LOAD_FAILED in status:
                raise RuntimeError(f"the app could not load its model: {status}")
            time.sleep(0.5)
    finally:
        client.close()
    raise TimeoutError(f"the model did not load:\n{app.log_tail()}")


def start_app(workdir: Path, *flags: str, model: str = "tiny-random",
              db_path: Path | None = None, port: int | None = None, env: dict | None = None,
              program: Sequence[str] | None = None, cwd: Path = ROOT,
              timeout: float = START_TIMEOUT_S) -> RunningApp:
    """Start `program` (default: this checkout's `python app.py`) with `--model model` and
    `flags`, and wait for its page.

    `db_path` None: `--db workdir/data/studio.db`; otherwise no --db flag is passed and
    `db_path` is where the app is expected to put its database by itself. `port`: listen
    there (a restarted app on the same origin keeps its browsers' stored keys); default a free
    one. `env` is added to this process's environment and one math thread per child.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    db_flag = [] if db_path else ["--db", str(workdir / "data" / "studio.db")]
    db_path = db_path or workdir / "data" / "studio.db"
    log_path = workdir / f"app-{port}.log"
    environment = {**os.environ, **THREAD_ENV, "PYTHONUNBUFFERED": "1",
                   "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    command = [*(program or (sys.executable, str(ROOT / "app.py"))), "--model", model,
               *db_flag, "--port", str(port), *flags]
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(command, cwd=cwd, env=environment, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    app = RunningApp(f"http://127.0.0.1:{port}/", db_path, process, log_path)
    try:
        wait_for_page(app, timeout)
    except BaseException:
        app.stop()
        raise
    return app


@contextmanager
def running_app(workdir: Path, *flags: str, model: str = "tiny-random",
                loaded: bool = True, **options) -> Iterator[RunningApp]:
    """`start_app(...)`, then (with `loaded`) `wait_for_model`; the app is stopped on exit."""
    app = start_app(workdir, *flags, model=model, **options)
    try:
        if loaded:
            wait_for_model(app)
        yield app
    finally:
        app.stop()
