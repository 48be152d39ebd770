"""Loopback stand-ins for the outside world: an SMTP server (aiosmtpd), Slack's Web
API and a webhook receiver (ThreadingHTTPServer), each recording exact requests."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SmtpRecorder:
    """aiosmtpd handler: refuses recipients starting with "refuse", keeps the rest."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refuse"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.content)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


@dataclass
class HttpRecorder:
    requests: list[dict[str, Any]] = field(default_factory=list)
    known_channels: set[str] = field(default_factory=set)
    webhook_status: int = 200


def start_http(recorder: HttpRecorder) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            recorder.requests.append(
                {
                    "path": self.path,
                    "headers": dict(self.headers),
                    "raw": raw,
                    "json": json.loads(raw),
                }
            )
            status, body = self.answer(self.path, json.loads(raw))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def answer(self, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            if path == "/slack/api/conversations.create":
                recorder.known_channels.add("C0INCIDENT")
                return 200, {"ok": True, "channel": {"id": "C0INCIDENT", "name": payload["name"]}}
            if path == "/slack/api/conversations.invite":
                return 200, {"ok": True}
            if path == "/slack/api/chat.postMessage":
                if payload["channel"] in recorder.known_channels:
                    return 200, {"ok": True, "ts": "1.0"}
                return 200, {"ok": False, "error": "channel_not_found"}
            if path == "/hook":
                return recorder.webhook_status, {"received": True}
            return 404, {"ok": False}

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
