"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for the judge tests: it replays a script of
replies, records every request, serves in a daemon thread, and stops itself after a time limit."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["judge_server", "reply"]


def reply(content: str) -> tuple[int, dict]:
    """A 200 chat completion whose message is ``content``."""
    return 200, {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }


@contextmanager
def judge_server(
    script: list[tuple[int, dict]], default: tuple[int, dict] | None = None, limit_s: float = 60.0
) -> Iterator[tuple[str, list[dict]]]:
    """Serve ``script`` (one (status, body) per request, then ``default``); yield (url, requests).

    Each recorded request is ``{"path", "headers", "body"}``. The server shuts down on exit
    or after ``limit_s`` seconds, whichever is first.
    """
    requests: list[dict] = []
    queue = list(script)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
            status, payload = queue.pop(0) if queue else (default or reply('{"clue_overlap": 5, "label_overlap": 5}'))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # keep the test output clean
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    timer = threading.Timer(limit_s, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions", requests
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
