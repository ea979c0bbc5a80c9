"""`transformers serve` as a child process, pinned to one checkpoint folder, on CPU.

`transformers_serve(path, workdir)` starts it on a free loopback port with an empty, offline
Hugging Face cache of its own under `workdir` (GET /v1/models scans that cache, and nothing
may be downloaded), waits until /health answers (the pinned model is loaded before the server
listens, so healthy means ready), yields a `Served`, and stops the server on exit. A server
that exits or never answers raises with the tail of its log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testing.processes import THREAD_ENV, free_port, stop_process

START_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Served:
    url: str  # the OpenAI-compatible base URL, ending in /v1
    port: int
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _cli() -> Path:
    cli = Path(sys.executable).with_name("transformers")
    if not cli.exists():
        raise RuntimeError("the transformers CLI is missing: pip install 'transformers[serving]'")
    return cli


@contextmanager
def transformers_serve(path: str | Path, workdir: Path, *, batching: bool = False,
                       timeout: float = START_TIMEOUT_S) -> Iterator[Served]:
    import httpx

    (workdir / "hf" / "hub").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **THREAD_ENV, "HF_HOME": str(workdir / "hf"), "HF_HUB_OFFLINE": "1"}
    port = free_port()
    command = [str(_cli()), "serve", str(path), "--device", "cpu", "--host", "127.0.0.1",
               "--port", str(port)]
    if batching:
        command.append("--continuous-batching")
    served = Served(f"http://127.0.0.1:{port}/v1", port, workdir / f"serve-{port}.log")
    with open(served.log_path, "wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"transformers serve exited ({process.returncode}):\n"
                                   + served.log_tail())
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"transformers serve did not come up:\n{served.log_tail()}")
            time.sleep(0.25)  # polling a child that is still starting, not synchronising
        yield served
    finally:
        stop_process(process, timeout=20)
