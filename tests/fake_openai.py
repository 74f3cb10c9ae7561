"""A scripted OpenAI-compatible server (POST /v1/chat/completions) on 127.0.0.1, stdlib only.

In a thread (`FakeOpenAI(...).start()`) or as a process (`python fake_openai.py --port-file F ...`, for a server
that can die mid-run). Each request is matched to the first script marker found in its user message; the n-th
request for a marker plays the n-th step of its list (the last step repeats). Steps:

    {"reply": "text"}                         200, the text as the assistant message
    {"status": 429, "headers": {...}}         an error status (body in OpenAI's error format)
    {"hang": 2.0, "reply": "text"}            sleep first (past the client's timeout), then reply
No marker: reply `{"pred": "yes", "score": 4}`. Every request is recorded (time, marker, user message, model,
temperature, Authorization header, and the openai client's `x-stainless-retry-count`: 0 for a first attempt, n for
its n-th retry of the same request); every reply sent is appended to `log_path` as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_REPLY = '{"pred": "yes", "score": 4}'


class FakeOpenAI:
    """The server; `requests` lists what it received, `replies` what it answered with a 200."""

    def __init__(
        self, script: dict | None = None, port: int = 0, log_path: str | None = None, die_after: int | None = None
    ):
        self.script, self.log_path, self.die_after = script or {}, log_path, die_after
        self.requests: list[dict] = []
        self.replies: list[dict] = []
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def count(self, marker: str) -> int:
        """Requests received whose user message holds `marker`."""
        return sum(marker in r["user"] for r in self.requests)

    def _step(self, user: str) -> tuple[str | None, dict]:
        with self._lock:
            marker = next((m for m in self.script if m in user), None)
            if marker is None:
                return None, {"reply": DEFAULT_REPLY}
            n = self._counts.get(marker, 0)
            self._counts[marker] = n + 1
            steps = self.script[marker]
            return marker, steps[min(n, len(steps) - 1)]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                user = "\n".join(m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user")
                marker, step = fake._step(user)
                with fake._lock:  # replies are sent under this lock too, so a death never cuts one in half
                    fake.requests.append(
                        {
                            "time": time.monotonic(),
                            "marker": marker,
                            "user": user,
                            "model": body.get("model"),
                            "temperature": body.get("temperature"),
                            "auth": self.headers.get("Authorization"),
                            "retry_count": self.headers.get("x-stainless-retry-count"),
                        }
                    )
                    received = len(fake.requests)
                    if fake.die_after is not None and received > fake.die_after:
                        os._exit(1)  # killed mid-run: this request gets no answer
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if "hang" in step:
                    time.sleep(step["hang"])
                if "status" in step:
                    return self._send(
                        step["status"],
                        {"error": {"message": f"scripted {step['status']}", "type": "scripted"}},
                        step.get("headers", {}),
                    )
                reply = {
                    "id": f"chatcmpl-{received}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": f"{body.get('model')}-served",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": step["reply"]},
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
                with fake._lock:
                    if self._send(200, reply):
                        fake.replies.append({"user": user, "reply": step["reply"]})
                        if fake.log_path:
                            with open(fake.log_path, "a") as f:
                                f.write(json.dumps({"user": user}) + "\n")

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> bool:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                    return True
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    return False

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", required=True, help="the bound port is written here once listening")
    parser.add_argument("--log", help="append one JSON line per reply sent")
    parser.add_argument("--die-after", type=int, help="exit at once on receiving request N+1")
    args = parser.parse_args()
    server = FakeOpenAI(port=args.port, log_path=args.log, die_after=args.die_after)
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.port))
    os.replace(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
