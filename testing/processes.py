"""Child processes on this machine: a free loopback port, and stopping a child for good.

`THREAD_ENV` gives a child one math thread: on two shared cores more threads make it erratic,
not faster. `stop_process` asks politely, then kills; it returns once the child is gone.
"""

from __future__ import annotations

import socket
import subprocess

THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
