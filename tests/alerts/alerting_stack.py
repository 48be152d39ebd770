"""A real Prometheus (Debian's /usr/bin/prometheus) evaluating a rule against a local
target, sending to one or two real Alertmanagers (Debian's prometheus-alertmanager,
an HA pair gossiping on loopback) whose webhook is LotoOps' receiver.

    stack = start_stack(webhook_url, tokens=[token_a, token_b])   # two = an HA pair
    stack.target.up = False        # the rule `lotolink_db_up == 0` fires within seconds
    stack.target.up = True         # ... and resolves
    stack.stop()

Configuration files are JSON (JSON is YAML: no YAML library needed). Everything
listens on 127.0.0.1 on free ports; without the binaries the tests skip locally and
fail with CI=true.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

PROMETHEUS = "/usr/bin/prometheus"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
RULE = {
    "alert": "PostgresDown",
    "expr": "lotolink_db_up == 0",
    "for": "0s",
    "labels": {"severity": "critical", "service": "postgres"},
    "annotations": {"summary": "Lotolink's PostgreSQL is down", "description": "db-1 is down"},
}
START_TIMEOUT = 30.0


class LocalTarget:
    """What Prometheus scrapes: `lotolink_db_up` 1 or 0, as the test sets it, and any
    other gauge the test puts in `metrics` (name -> value)."""

    def __init__(self) -> None:
        self.up = True
        self.metrics: dict[str, float] = {}
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                lines = [f"lotolink_db_up {1 if target.up else 0}"]
                lines += [f"{name} {value}" for name, value in dict(target.metrics).items()]
                body = ("\n".join(lines) + "\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.instance = f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    target: LocalTarget
    prometheus_url: str
    alertmanager_urls: list[str]
    workdir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-2000:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        with contextlib.suppress(Exception):
            self.target.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(stack: Stack, name: str, argv: list[str]) -> None:
    with (stack.workdir / f"{name}.log").open("ab") as log:
        stack.processes.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        )


def _wait_ready(stack: Stack, url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in stack.processes):
            break
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready:\n{stack.logs()}")


def _alertmanager_config(webhook_url: str, token: str) -> dict:
    return {
        "route": {
            "receiver": "lotoops",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "lotoops",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                    }
                ],
            }
        ],
    }


def start_stack(webhook_url: str, tokens: list[str], rules: list[dict] | None = None) -> Stack:
    """One Alertmanager per token (two: an HA pair), and a Prometheus sending to all,
    evaluating `rules` (default: RULE)."""
    stack = Stack(
        target=LocalTarget(),
        prometheus_url="",
        alertmanager_urls=[],
        workdir=Path(tempfile.mkdtemp(prefix="lotoops-alerting-")),
    )
    try:
        _start_into(stack, webhook_url, tokens, rules or [RULE])
    except BaseException:
        stack.stop()
        raise
    return stack


def _start_into(stack: Stack, webhook_url: str, tokens: list[str], rules: list[dict]) -> None:
    cluster_ports = [free_port() for _ in tokens]
    for index, token in enumerate(tokens):
        port = free_port()
        config = stack.workdir / f"alertmanager-{index}.yml"
        config.write_text(json.dumps(_alertmanager_config(webhook_url, token)))
        argv = [
            ALERTMANAGER,
            f"--config.file={config}",
            f"--storage.path={stack.workdir / f'am-data-{index}'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=info",
        ]
        if len(tokens) > 1:
            argv += [
                f"--cluster.listen-address=127.0.0.1:{cluster_ports[index]}",
                f"--cluster.advertise-address=127.0.0.1:{cluster_ports[index]}",
                "--cluster.peer-timeout=0s",
                "--cluster.gossip-interval=100ms",
                "--cluster.pushpull-interval=1s",
            ]
            argv += [
                f"--cluster.peer=127.0.0.1:{p}" for p in cluster_ports if p != cluster_ports[index]
            ]
        else:
            argv.append("--cluster.listen-address=")
        _spawn(stack, f"alertmanager-{index}", argv)
        stack.alertmanager_urls.append(f"http://127.0.0.1:{port}")
    for url in stack.alertmanager_urls:
        _wait_ready(stack, url)

    rule_file = stack.workdir / "rules.yml"
    rule_file.write_text(json.dumps({"groups": [{"name": "lotolink", "rules": rules}]}))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rule_file)],
        "alerting": {
            "alertmanagers": [
                {
                    "static_configs": [
                        {"targets": [u.removeprefix("http://") for u in stack.alertmanager_urls]}
                    ]
                }
            ]
        },
        "scrape_configs": [
            {
                "job_name": "lotolink-db",
                "static_configs": [{"targets": [stack.target.instance]}],
            }
        ],
    }
    (stack.workdir / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    _spawn(
        stack,
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={stack.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={stack.workdir / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.console.templates=/nonexistent",
            "--web.console.libraries=/nonexistent",
            "--log.level=warn",
        ],
    )
    stack.prometheus_url = f"http://127.0.0.1:{port}"
    _wait_ready(stack, stack.prometheus_url)
