"""The embedded default, started by `python3 lotoops/cli.py run`: migrate, seed,
then supervise the ASGI web server, a Celery worker and Celery beat until
Ctrl-C. Also `test`, which runs the suite."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diagnostics import queues

# Where the worker and beat say they have started (see lotoops/celery.py).
READY_DIR_VARIABLE = "LOTOOPS_READY_DIR"
# How long the run command waits for them before printing the URL and password again.
READY_WAIT = 60.0
UVICORN_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


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
    try:
        commands = child_commands(python, host, port, os.environ)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    ready_dir = Path(tempfile.mkdtemp(prefix="lotoops-ready-"))
    child_env = {**os.environ, READY_DIR_VARIABLE: str(ready_dir)}
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for name, command in commands.items():
        # Own process group: Ctrl-C reaches us once, and we stop each child in order.
        children[name] = subprocess.Popen(command, start_new_session=True, env=child_env)
    url = f"http://{host}:{port}/"
    print(
        f"\nLotoOps is starting at {url} (database: {engine.rsplit('.', 1)[-1]}; "
        f"web, worker and beat pids {', '.join(str(c.pid) for c in children.values())})"
    )
    if password:
        print(
            f'First start: created the admin user "admin" with password {password}\n'
            "(repeated below once everything is up, then never again: change it in the "
            "admin at /admin/)."
        )
    print("Press Ctrl-C to stop everything.\n", flush=True)
    restarts: dict[str, int] = dict.fromkeys(commands, 0)
    due: dict[str, float] = {}
    # Once web, worker and beat are up (or after READY_WAIT seconds), the URL and the
    # password again, last: whatever the children printed while starting is above them.
    announce_by: float | None = time.monotonic() + READY_WAIT
    while not stopping:
        now = time.monotonic()
        if announce_by is not None:
            up = started(ready_dir, host, port)
            if len(up) == len(commands) or now >= announce_by:
                announce(url, password, up, commands)
                announce_by = None
        for name, child in children.items():
            if name in due:
                if now >= due[name] and not stopping:
                    del due[name]
                    children[name] = subprocess.Popen(
                        commands[name], start_new_session=True, env=child_env
                    )
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
    shutil.rmtree(ready_dir, ignore_errors=True)
    return 0


def log_level(env: Mapping[str, str]) -> str:
    """The children's log level: `LOG_LEVEL` if set, else WARNING, so routine chatter
    (each heartbeat task received and succeeded, every 15 s) stays out of the console."""
    return (env.get("LOG_LEVEL") or "").strip().upper() or "WARNING"


def proxy_args(env: Mapping[str, str]) -> list[str]:
    """uvicorn's trust of X-Forwarded-For/-Proto: none unless FORWARDED_ALLOW_IPS names
    the proxy's addresses (uvicorn's own default trusts loopback, so anything on this
    machine could pose as any client: a login lockout per address would never bite).
    Never `*`: every client could then pick its own address."""
    allowed = [a.strip() for a in (env.get("FORWARDED_ALLOW_IPS") or "").split(",") if a.strip()]
    if not allowed:
        return ["--no-proxy-headers"]
    if "*" in allowed:
        raise ValueError("FORWARDED_ALLOW_IPS must name the proxy's addresses, never *")
    return ["--proxy-headers", "--forwarded-allow-ips", ",".join(allowed)]


def child_commands(
    python: str, host: str, port: int, env: Mapping[str, str]
) -> dict[str, list[str]]:
    """The web server, the worker and beat, at `log_level(env)`. Quiet (no Celery
    banner, no uvicorn start-up lines) unless the level asks for INFO or DEBUG."""
    level = log_level(env)
    # Celery's global --quiet (before the sub-command): no start-up banner.
    quiet = [] if level in ("DEBUG", "INFO") else ["--quiet"]
    concurrency = env.get("CELERY_CONCURRENCY", "2")
    return {
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
            *proxy_args(env),
            "--log-level",
            level.lower() if level.lower() in UVICORN_LEVELS else "warning",
        ],
        "worker": [
            python,
            "-m",
            "celery",
            "-A",
            "lotoops",
            *quiet,
            "worker",
            "--loglevel",
            level,
            "--concurrency",
            concurrency,
            # One worker on every queue here; production runs one per queue class.
            "--queues",
            ",".join(queues.all_queues(env.get("CELERY_DEFAULT_QUEUE") or "celery")),
            "--hostname",
            "worker@%h",
        ],
        "beat": [
            python,
            "-m",
            "celery",
            "-A",
            "lotoops",
            *quiet,
            "beat",
            "--loglevel",
            level,
        ],
    }


def started(ready_dir: Path, host: str, port: int) -> set[str]:
    """Which children are up: the web server answers on its port; the worker and beat
    each leave a file in `ready_dir` when Celery says so (lotoops/celery.py)."""
    up = {name for name in ("worker", "beat") if (ready_dir / name).exists()}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        if sock.connect_ex((host, port)) == 0:
            up.add("web")
    return up


def announce(url: str, password: str | None, up: set[str], commands: Mapping[str, Any]) -> None:
    """The end of the start-up output: where to go and, on first start, how to log in."""
    late = [name for name in commands if name not in up]
    state = (
        "web, worker and beat are up"
        if not late
        else f"{' and '.join(late)} not up yet (see the lines above)"
    )
    lines = ["", "=" * 72, f"LotoOps is ready at {url} ({state})."]
    if password:
        lines.append(
            f'First start: created the admin user "admin" with password {password}\n'
            "(not shown again: change it in the admin at /admin/)."
        )
    lines += ["Press Ctrl-C to stop everything.", "=" * 72, ""]
    print("\n".join(lines), flush=True)


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
