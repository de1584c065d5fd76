"""Real local receivers for notification tests: an HTTP endpoint for Apprise ``json://`` and an
SMTP server (aiosmtpd) for ``mailto://``. Both run in threads and record what they get."""

from __future__ import annotations

import email
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HttpReceiver:
    """Records JSON posts by path; ``fail[path] = n`` answers 500 to the next n posts there."""

    port: int = 0
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"json://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def messages(self, path: str) -> list[dict[str, Any]]:
        return [m for p, m in self.received if p == "/" + path.lstrip("/")]


@contextmanager
def http_receiver() -> Iterator[HttpReceiver]:
    rec = HttpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            rec.attempts.append(self.path)
            if rec.fail.get(self.path, 0) > 0:
                rec.fail[self.path] -= 1
                self.send_response(500)
                self.end_headers()
                return
            rec.received.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SmtpSink:
    """Records mail; with ``reject`` set, answers every message's DATA with that reply."""

    port: int
    messages: list[Message] = field(default_factory=list)
    reject: str | None = None

    def url(self, to: str) -> str:
        return (f"mailto://127.0.0.1:{self.port}?to={to}&from=altaviz@example.com"
                "&mode=insecure")

    @staticmethod
    def text(msg: Message) -> str:
        for part in msg.walk():
            if part.get_content_type() == "text/plain":
                payload = part.get_payload(decode=True)
                assert isinstance(payload, bytes)
                return payload.decode()
        raise AssertionError("no text/plain part")


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(port=free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            if sink.reject is not None:
                return sink.reject
            sink.messages.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
