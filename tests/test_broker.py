"""The embedded default's broker (lotoops/broker.py): several processes send
10,000 messages while two others consume them; every message arrives exactly once
and no consumer crashes (kombu's own filesystem transport lets a reader open a
message file before it is written, kombu issue #1551)."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

PRODUCERS, PER_PRODUCER, CONSUMERS = 4, 2_500, 2
QUEUE = "stress"
ROOT = Path(__file__).resolve().parent.parent


def options(folder: Path) -> dict[str, object]:
    return {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "control_folder": str(folder.parent / "control"),
        "polling_interval": 0.01,
    }


def produce(folder: str, producer: int) -> None:
    from kombu import Connection

    from lotoops import broker

    broker.register()
    with Connection("lotoopsfs://", transport_options=options(Path(folder))) as conn:
        queue = conn.SimpleQueue(QUEUE)
        for n in range(PER_PRODUCER):
            queue.put({"id": f"{producer}-{n}", "pad": "x" * (n % 700)})
        queue.close()


def consume(folder: str, out: str, stop_after: float) -> None:
    from kombu import Connection

    from lotoops import broker

    broker.register()
    seen = []
    with Connection("lotoopsfs://", transport_options=options(Path(folder))) as conn:
        queue = conn.SimpleQueue(QUEUE)
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < stop_after:
            try:
                message = queue.get(block=True, timeout=0.2)
            except queue.Empty:
                continue
            seen.append(message.payload["id"])
            message.ack()
            idle_since = time.monotonic()
        queue.close()
    Path(out).write_text("\n".join(seen))


@pytest.mark.timeout(300)
def test_ten_thousand_messages_from_several_processes_arrive_once_each(tmp_path):
    folder = tmp_path / "queue"
    folder.mkdir()
    (tmp_path / "control").mkdir()
    spawn = multiprocessing.get_context("spawn")
    consumers = [
        spawn.Process(target=consume, args=(str(folder), str(tmp_path / f"seen-{i}"), 5.0))
        for i in range(CONSUMERS)
    ]
    producers = [spawn.Process(target=produce, args=(str(folder), p)) for p in range(PRODUCERS)]
    for process in consumers + producers:
        process.start()
    for process in producers + consumers:
        process.join(timeout=240)
    assert [p.exitcode for p in producers + consumers] == [0] * (PRODUCERS + CONSUMERS)
    seen = [
        line for i in range(CONSUMERS) for line in (tmp_path / f"seen-{i}").read_text().splitlines()
    ]
    expected = {f"{p}-{n}" for p in range(PRODUCERS) for n in range(PER_PRODUCER)}
    assert len(seen) == len(expected)  # none doubled
    assert set(seen) == expected  # none lost
    assert not [name for name in os.listdir(folder)]  # no half-written leftovers


def slow_kombu_lock(monkeypatch) -> None:
    """kombu's _put opens the file, locks it, then writes: widen that gap."""
    from kombu.transport import filesystem

    original = filesystem.lock

    def slow(file, flags):
        time.sleep(0.3)
        return original(file, flags)

    monkeypatch.setattr(filesystem, "lock", slow)


def race(scheme: str, folder: Path) -> tuple[list[str], list[str]]:
    """One thread sends a message while another polls: what arrived, what failed."""
    import threading

    from kombu import Connection

    from lotoops import broker

    broker.register()
    got: list[str] = []
    errors: list[str] = []

    def send() -> None:
        with Connection(scheme, transport_options=options(folder)) as conn:
            conn.SimpleQueue(QUEUE).put({"id": "whole"})

    def receive() -> None:
        with Connection(scheme, transport_options=options(folder)) as conn:
            queue = conn.SimpleQueue(QUEUE)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not got:
                try:
                    message = queue.get(block=True, timeout=0.05)
                except queue.Empty:
                    continue
                except Exception as exc:  # what kombu's own transport raises mid-write
                    errors.append(type(exc).__name__)
                    return
                got.append(message.payload["id"])

    reader = threading.Thread(target=receive)
    reader.start()
    time.sleep(0.1)
    send()
    reader.join(timeout=10)
    return got, errors


def test_a_reader_never_sees_a_message_being_written(tmp_path, monkeypatch):
    slow_kombu_lock(monkeypatch)
    for name in ("ours", "kombus"):
        (tmp_path / name).mkdir()
    (tmp_path / "control").mkdir()
    assert race("lotoopsfs://", tmp_path / "ours") == (["whole"], [])
    # The same race on kombu's own transport: the reader opens the empty file.
    assert race("filesystem://", tmp_path / "kombus")[1] == ["JSONDecodeError"]


def test_a_fresh_clones_first_process_finds_the_queue_folder(tmp_path):
    """No `cli.py run` before: a test run or a worker started by hand on a fresh clone
    finds the embedded broker's folders, so /healthz does not call the broker down."""
    var = tmp_path / "var"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
    }
    env |= {"LOTOOPS_VAR_DIR": str(var), "DJANGO_SETTINGS_MODULE": "lotoops.settings"}
    code = (
        "import django; django.setup(); from lotoops.health import check_broker; "
        "print(check_broker()['status'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "ok", result.stdout + result.stderr
    assert (var / "broker" / "queue").is_dir()
