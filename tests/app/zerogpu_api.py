"""A local stand-in for the ZeroGPU device API that the real `spaces` package calls.

On a ZeroGPU Space the package asks an HTTP service (SPACES_ZERO_DEVICE_API_URL) to schedule
each decorated call, to allow the worker process onto the GPU and to release it afterwards.
This server answers those four endpoints the way the service does when a GPU is free (or,
with `quota_left`, when the visitor's quota is too small) and records every request, so a test
can run the real package, unmodified, on 127.0.0.1 and check what the app asked for (the
durations above all). Only the API is replaced: the package's CUDA emulation, forking and
worker protocol are its own.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

GPU_UUID = "GPU-00000000-0000-0000-0000-000000000000"


@dataclass
class ZeroGPUApi:
    """`start()` serves on a free loopback port; `calls` lists (path, params) in arrival order."""

    gpu_uuid: str = GPU_UUID
    # Seconds of quota the visitor has left; None lends a GPU for any duration. When set below
    # a request's duration, the schedule is refused as the service refuses it (HTTP 429).
    quota_left: int | None = None
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> ZeroGPUApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                parts = urlsplit(self.path)
                params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
                with api._changed:
                    api.calls.append((parts.path, params))
                    api._changed.notify_all()
                duration = int(params.get("durationSeconds", 0))
                if parts.path == "/schedule" and api.quota_left is not None and (
                        duration > api.quota_left):
                    body = json.dumps({"left": api.quota_left, "wait": 3600}).encode()
                    self.send_response(429)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if parts.path == "/schedule":
                    body = json.dumps({"idle": True, "nvidiaIndex": 0, "nvidiaUUID": api.gpu_uuid,
                                       "allowToken": f"token-{len(api.calls)}"}).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if parts.path in ("/startup-report", "/allow", "/release"):
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # the test reads `calls`, not a log
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, path: str, count: int = 1, timeout: float = 120.0) -> list[dict]:
        """The params of the first `count` calls to `path`, waiting for them to arrive."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.of(path)) >= count, timeout)
            return self.of(path)

    def of(self, path: str) -> list[dict]:
        return [params for called, params in self.calls if called == path]
