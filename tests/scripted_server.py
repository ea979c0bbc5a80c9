"""A loopback HTTP server whose replies a test writes, for hostile or failing model servers.

`ScriptedServer(reply)` calls `reply(handler)` for every GET and POST (a POST's body is read
first and kept in `bodies`); `paths` lists every path asked. Helpers write a JSON reply and an
OpenAI-style stream of chat-completion chunks.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ScriptedServer:
    def __init__(self, reply) -> None:
        self.paths: list[str] = []
        self.bodies: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                owner.paths.append(self.path)
                reply(self)

            def do_POST(self):
                owner.paths.append(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.bodies.append(json.loads(body or b"{}"))
                reply(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_json(handler, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def send_stream(handler, *contents: str) -> None:
    """A chat-completion stream whose answer is `contents`, one chunk each, then stop."""
    chunks = [{"object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
              for text in contents]
    chunks.append({"object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    payload = ("".join(f"data: {json.dumps(c)}\n\n" for c in chunks)
               + "data: [DONE]\n\n").encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def model_listing(model: str, *adapters: str) -> dict:
    return {"object": "list", "data": [
        {"id": model, "object": "model", "parent": None},
        *({"id": name, "object": "model", "parent": model} for name in adapters)]}
