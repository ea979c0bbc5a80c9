"""Child processes on this machine: a free loopback port, stopping a child for good, and
whether a process still runs and which children it has (from /proc).

`THREAD_ENV` gives a child one math thread: on two shared cores more threads make it erratic,
not faster. `stop_process` asks politely, then kills; it returns once the child is gone.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

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


def _running_stat(path: Path) -> list[str] | None:
    """The fields of a /proc/PID/stat after the command name (state first, then parent id)
    while the process runs; None once it is gone or has stopped (a zombie waiting to be
    reaped)."""
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields


def process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped has stopped). Linux only."""
    return _running_stat(Path(f"/proc/{pid}/stat")) is not None


def children_of(pid: int) -> list[int]:
    """The running processes whose parent is `pid`. Linux only."""
    found = []
    for entry in Path("/proc").iterdir():
        fields = _running_stat(entry / "stat") if entry.name.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found
