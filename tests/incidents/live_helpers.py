"""Helpers for the live-timeline tests: logged-in cookies, an SSE parser, another
web process (uvicorn in a subprocess on the test database), timeline writers in
other processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from django.test import Client

from tests.diagnostics.worker import test_database_url

ROOT = Path(__file__).resolve().parents[2]


def session_cookie(user: object) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    return {"sessionid": client.cookies["sessionid"].value}


def sse_events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The messages that carry an id (timeline events), as field -> value."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if "id" in event:
                yield event
            event = {}
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        event[field] = event[field] + "\n" + value if field in event else value


def subprocess_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": test_database_url(),
        "DJANGO_SETTINGS_MODULE": "lotoops.settings",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def web_process(
    *, app: str = "lotoops.asgi:application", start_timeout: float = 20, **env: str
) -> Iterator[str]:
    """Another web process: uvicorn serving the real ASGI app on the test database
    (`app`: a module that wraps it, e.g. registering the test probes)."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--lifespan",
            "off",
        ],
        cwd=ROOT,
        env=subprocess_env(**env),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                httpx.get(f"{url}/login/", timeout=1.0)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the web process did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def start_writers(
    incident_id: int, user_id: int, *, writers: int, count: int, start_at: float
) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.incidents.timeline_writer",
                str(incident_id),
                str(user_id),
                str(n),
                str(count),
                str(start_at),
            ],
            cwd=ROOT,
            env=subprocess_env(),
        )
        for n in range(writers)
    ]
