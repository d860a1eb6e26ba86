"""A fake OpenAI-compatible completions server on 127.0.0.1, with faults.

It speaks the part of the protocol the ``openai`` inference backend uses — ``POST /v1/completions``
with ``model``, ``prompt``, ``max_tokens``, ``n``, ``temperature``, ``top_p``, ``seed`` — and
``GET /v1/models``. What it answers comes from ``complete(body) -> list[str]`` (one text per choice),
so a test can back it with the project's own engine and compare views, or with canned text.

Models it serves are ``models`` (a request for another gets vLLM's 404 shape). Faults, first added
first used, each ``times`` times:

* ``status``: answer with that HTTP status and a JSON error body, without completing;
* ``delay``: wait ``delay_s`` before answering (beyond the client's timeout: a timeout);
* ``reset``: close the connection without answering;
* ``garbage``: answer 200 with a body that is not a completions response.

Every request body is recorded in :attr:`FakeOpenAI.requests`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Fault:
    kind: str
    times: int = 1
    status: int = 500
    delay_s: float = 0.0


class FakeOpenAI:
    def __init__(self, complete: Callable[[dict[str, Any]], list[str]], models: set[str] | None = None) -> None:
        self.complete = complete
        self.models = models
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _send(self, status: int, payload: Any) -> None:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in sorted(fake.models or [])]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with fake._lock:
                    fake.requests.append(body)
                    fault = fake._take_fault()
                if fault is not None:
                    if fault.kind == "reset":
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if fault.kind == "status":
                        self._send(fault.status, {"error": {"message": f"injected {fault.status}", "type": "server_error"}})
                        return
                    if fault.kind == "garbage":
                        self._send(200, b"<html>proxy error</html>")
                        return
                    if fault.kind == "delay":
                        time.sleep(fault.delay_s)
                if self.path.rstrip("/") != "/v1/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                if fake.models is not None and body.get("model") not in fake.models:
                    self._send(404, {"object": "error", "message": f"The model `{body.get('model')}` does not exist.", "code": 404})
                    return
                texts = fake.complete(body)
                choices = [{"index": i, "text": t, "finish_reason": "stop", "logprobs": None} for i, t in enumerate(texts)]
                self._send(200, {"id": "cmpl-fake", "object": "text_completion", "model": body.get("model"), "choices": choices,
                                 "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _take_fault(self) -> Fault | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        fault.times -= 1
        if fault.times <= 0:
            self.faults.pop(0)
        return fault

    def add_fault(self, kind: str, times: int = 1, **kwargs: Any) -> None:
        self.faults.append(Fault(kind, times, **kwargs))

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
