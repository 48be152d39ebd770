"""The embedded default, started by `python3 lotoops/cli.py run`: migrate, seed,
then supervise the ASGI web server, a Celery worker and Celery beat until
Ctrl-C. Also `test`, which runs the suite."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from diagnostics import queues


def prepare() -> int:
    """Migrate and seed (in a child process: the supervisor itself never loads
    Django, which keeps the embedded run's memory down); the last line printed
    is JSON with the database engine and, on first start, the admin password."""
    engine, password = _prepare()
    print(json.dumps({"engine": engine, "password": password}), flush=True)
    return 0


def make_private(var_dir: Path, database: dict[str, Any]) -> None:
    """var/ (the database, the broker's messages, the secret key) is the owner's
    only: the folder 0700, the SQLite file 0600, created so before migrate writes
    to it (SQLite gives its -wal and -shm files the database file's mode)."""
    var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    var_dir.chmod(0o700)
    name = str(database.get("NAME") or "")
    if database["ENGINE"] != "django.db.backends.sqlite3" or name in ("", ":memory:"):
        return
    path = Path(name)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists():
            file.chmod(0o600)


def _prepare() -> tuple[str, str | None]:
    """Migrate and seed; return the database engine and, on first start, the admin password."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    make_private(Path(settings.VAR_DIR), settings.DATABASES["default"])
    for key in ("data_folder_in", "control_folder"):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(key)
        if folder:
            Path(str(folder)).mkdir(mode=0o700, parents=True, exist_ok=True)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("seed_runbook")
    call_command("seed_alerts")
    call_command("collectstatic", interactive=False, verbosity=0)
    password = None
    users = get_user_model().objects
    if not users.filter(is_superuser=True).exists():
        password = secrets.token_urlsafe(12)
        users.create_superuser("admin", "", password)
    return settings.DATABASES["default"]["ENGINE"], password


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def run() -> int:
    host = os.environ.get("HOST", "127.0.0.1")
    try:
        port = int(os.environ.get("PORT", "8000"))
    except ValueError:
        print(f"PORT must be a number, not {os.environ['PORT']!r}", file=sys.stderr)
        return 2
    if not _port_free(host, port):
        print(f"Port {port} on {host} is in use: stop what uses it or set PORT.", file=sys.stderr)
        return 2
    python = sys.executable
    prepared = subprocess.run(
        [python, "-m", "lotoops.embedded", "prepare"], stdout=subprocess.PIPE, text=True
    )
    if prepared.returncode != 0:
        print("Preparing the database failed (see above).", file=sys.stderr)
        return prepared.returncode
    *log, last = prepared.stdout.strip().splitlines() or ["{}"]
    print("\n".join(log))
    state = json.loads(last)
    engine, password = state["engine"], state["password"]
    concurrency = os.environ.get("CELERY_CONCURRENCY", "2")
    commands = {
        "web": [
            python,
            "-m",
            "uvicorn",
            "lotoops.asgi:application",
            "--host",
            host,
            "--port",
            str(port),
            "--timeout-graceful-shutdown",
            "2",
            "--no-access-log",
            "--lifespan",
            "off",
        ],
        "worker": [
            python,
            "-m",
            "celery",
            "-A",
            "lotoops",
            "worker",
            "--loglevel",
            "INFO",
            "--concurrency",
            concurrency,
            # One worker on every queue here; production runs one per queue class.
            "--queues",
            ",".join(queues.all_queues(os.environ.get("CELERY_DEFAULT_QUEUE") or "celery")),
            "--hostname",
            "worker@%h",
        ],
        "beat": [python, "-m", "celery", "-A", "lotoops", "beat", "--loglevel", "WARNING"],
    }
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, command in commands.items():
        # Own process group: Ctrl-C reaches us once, and we stop each child in order.
        children[name] = subprocess.Popen(command, start_new_session=True)
    url = f"http://{host}:{port}/"
    print(
        f"\nLotoOps is starting at {url} (database: {engine.rsplit('.', 1)[-1]}; "
        f"web, worker and beat pids {', '.join(str(c.pid) for c in children.values())})"
    )
    if password:
        print(
            f'First start: created the admin user "admin" with password {password}\n'
            "(shown only this once: change it in the admin at /admin/)."
        )
    print("Press Ctrl-C to stop everything.\n", flush=True)
    restarts: dict[str, int] = dict.fromkeys(commands, 0)
    due: dict[str, float] = {}
    while not stopping:
        now = time.monotonic()
        for name, child in children.items():
            if name in due:
                if now >= due[name] and not stopping:
                    del due[name]
                    children[name] = subprocess.Popen(commands[name], start_new_session=True)
                    print(f"{name} restarted (pid {children[name].pid}).", file=sys.stderr)
            elif child.poll() is not None:
                # One child down must not take the others with it: restart it after
                # a back-off that grows while it keeps dying (1 s, 2 s, 4 s ... 30 s).
                restarts[name] += 1
                wait = min(30.0, 2.0 ** (restarts[name] - 1))
                print(
                    f"{name} exited with code {child.returncode}: restarting in {wait:g} s "
                    f"(restart {restarts[name]}).",
                    file=sys.stderr,
                    flush=True,
                )
                due[name] = now + wait
        time.sleep(0.2)
    _stop_all(children)
    return 0


def _stop_all(children: dict[str, subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """SIGTERM each process (Celery's worker then stops its own pool), then
    SIGKILL the process group of whatever is still running after the grace."""
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + grace
    for name, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop within {grace:g} s: killing it.", file=sys.stderr)
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    print("Stopped web server, worker and beat.")


def test(args: list[str]) -> int:
    # The suite waits on servers and subprocesses more than it computes: several
    # pytest-xdist workers (one test module each at a time, so a module's servers
    # start once) keep it short. `-n 0`, `-p no:xdist` or LOTOOPS_TEST_WORKERS=0 turn it off.
    workers = os.environ.get("LOTOOPS_TEST_WORKERS", "2")
    chosen = any(a in ("-n", "--numprocesses", "no:xdist") or a.startswith("-n") for a in args)
    if not chosen and workers != "0":
        args = ["-n", workers, "--dist", "loadfile", *args]
    os.execv(sys.executable, [sys.executable, "-m", "pytest", *args])
    return 0  # not reached


def main(argv: list[str]) -> int:
    if argv and argv[0] == "run":
        return run()
    if argv and argv[0] == "prepare":
        return prepare()
    if argv and argv[0] == "test":
        return test(argv[1:])
    print("usage: python3 lotoops/cli.py run|test [pytest args]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
