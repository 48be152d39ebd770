"""The two set-up commands' entry point, and the embedded default they start."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
CLI = ROOT / "lotoops" / "cli.py"


def test_an_old_python_gets_a_clear_message_not_a_traceback():
    code = (
        "import sys; sys.path.insert(0, 'lotoops'); import cli; "
        "cli.MINIMUM = (9, 9); cli.main(['run'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "LotoOps needs Python 9.9 or newer" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not shutil.which("python3.11"), reason="no Python 3.11 on this machine")
def test_python_3_11_is_refused_clearly():
    env = {**os.environ, "PYENV_VERSION": "3.11.7"}
    result = subprocess.run(
        ["python3.11", str(CLI), "run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 2
    assert "LotoOps needs Python 3.12 or newer; this is Python 3.11" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_command_prints_the_usage():
    result = subprocess.run(
        [sys.executable, str(CLI), "serve"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "usage: python3 lotoops/cli.py COMMAND" in result.stderr


@pytest.mark.cjk_font
def test_django_system_checks_are_clean():
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "WARNING"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_the_children_log_at_warning_unless_log_level_says_otherwise():
    from lotoops.embedded import child_commands

    quiet = child_commands("python", "127.0.0.1", 8000, {})
    assert quiet["worker"][quiet["worker"].index("--loglevel") + 1] == "WARNING"
    assert quiet["beat"][quiet["beat"].index("--loglevel") + 1] == "WARNING"
    assert quiet["web"][quiet["web"].index("--log-level") + 1] == "warning"
    assert quiet["worker"].index("--quiet") < quiet["worker"].index("worker")  # no banner
    loud = child_commands("python", "127.0.0.1", 8000, {"LOG_LEVEL": "info"})
    assert loud["worker"][loud["worker"].index("--loglevel") + 1] == "INFO"
    assert loud["beat"][loud["beat"].index("--loglevel") + 1] == "INFO"
    assert loud["web"][loud["web"].index("--log-level") + 1] == "info"
    assert "--quiet" not in loud["worker"] + loud["beat"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            child = int(proc.name)
            found |= {child} | descendants(child)
    return found


@pytest.mark.smoke
def test_the_embedded_default_starts_serves_and_stops_on_ctrl_c(tmp_path):
    """SQLite, the filesystem broker, no Redis: web, worker and beat up, /healthz
    sees the worker, the printed admin logs in, Ctrl-C stops every process."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"}
    }
    var = tmp_path / "var"  # created by the run command itself
    env |= {"PORT": str(port), "LOTOOPS_VAR_DIR": str(var), "PYTHONUNBUFFERED": "1"}
    runner = subprocess.Popen(
        [sys.executable, "-m", "lotoops.embedded", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(runner.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        health = {}
        while time.monotonic() < deadline:
            try:
                health = requests.get(f"{base}/healthz", timeout=2).json()
                if health["checks"]["worker"]["status"] == "ok":
                    break
            except requests.RequestException:
                pass
            assert runner.poll() is None, "the run command exited early"
            time.sleep(0.5)
        assert health.get("status") == "ok", health
        # The URL and the password again, last, once web, worker and beat are up; no
        # heartbeat chatter (a heartbeat has run: /healthz saw the worker) around them.
        ready = f"LotoOps is ready at {base}/ (web, worker and beat are up)."
        while ready not in "".join(output) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        text = "".join(output)
        assert ready in text, text
        final = text[text.index(ready) :]
        assert re.search(r'created the admin user "admin" with password (\S+)', final)
        assert text.index(ready) > text.index("LotoOps is starting at")
        for chatter in ("heartbeat", "received", "succeeded in", "celery@", "Uvicorn running"):
            assert chatter not in text, chatter
        assert health["checks"]["redis"] == {"status": "not configured"}  # no details: no login
        assert stat.S_IMODE(var.stat().st_mode) == 0o700
        assert stat.S_IMODE((var / "lotoops.sqlite3").stat().st_mode) == 0o600
        assert stat.S_IMODE((var / "secret_key").stat().st_mode) == 0o600

        password = re.search(r'created the admin user "admin" with password (\S+)', "".join(output))
        assert password, output
        session = requests.Session()
        session.get(f"{base}/login/", timeout=5)
        login = session.post(
            f"{base}/login/",
            {
                "username": "admin",
                "password": password[1],
                "csrfmiddlewaretoken": session.cookies["csrftoken"],
            },
            headers={"Referer": f"{base}/login/"},
            timeout=5,
        )
        assert login.url == f"{base}/" and "Open incidents" in login.text
        details = session.get(f"{base}/healthz", timeout=5).json()["checks"]
        assert details["database"]["vendor"] == "sqlite"
        assert details["broker"]["transport"] == "filesystem"

        # A child that dies is restarted (with a back-off); the others keep serving.
        pids = re.search(r"web, worker and beat pids (\d+), (\d+), (\d+)", "".join(output))
        assert pids, output
        os.kill(int(pids[2]), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while "worker restarted" not in "".join(output) and time.monotonic() < deadline:
            assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
            time.sleep(0.5)
        assert "worker exited with code -9: restarting in 1 s" in "".join(output)
        assert "worker restarted" in "".join(output)
        assert runner.poll() is None

        children = descendants(runner.pid)
        assert len(children) >= 3  # web, worker (+ its pool), beat
        runner.send_signal(signal.SIGINT)
        runner.wait(timeout=30)
        reader.join(timeout=5)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    text = "".join(output)
    assert f"LotoOps is starting at http://127.0.0.1:{port}/" in text
    assert "Stopped web server, worker and beat." in text
    time.sleep(0.5)
    assert not [
        pid
        for pid in children
        if Path(f"/proc/{pid}").exists()
        and "Z" not in (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0])
    ]
