"""Idle cost of the embedded default run: CPU time each process spends while
nobody uses LotoOps (web, worker and its pool, beat, the supervisor).

Starts `python -m lotoops.embedded run` in a temp dir (SQLite, the filesystem
broker, no Redis), waits until /healthz sees the worker, lets it settle, then
reads utime+stime from /proc/<pid>/stat of every process at the start and the
end of a window and prints the share of one core each used. Goal: under 2 % of
one core in total.

    .venv/bin/python bench/bench_idle.py [--window 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_pages  # noqa: E402  (its embedded-run helpers)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()
    samples: dict[int, tuple[str, float]] = {}
    result: list[tuple[str, float]] = []

    def measure(runner: int) -> None:
        for pid, parent in bench_pages.descendants(runner):
            samples[pid] = (bench_pages._label(pid, parent, runner), cpu_seconds(pid))
        time.sleep(args.window)
        for pid, (role, before) in samples.items():
            try:
                result.append((role, cpu_seconds(pid) - before))
            except OSError:
                result.append((f"{role} (exited)", 0.0))

    bench_pages.with_embedded_run(measure, timeout=90, idle=10)
    load = os.getloadavg()
    print(f"embedded default at idle, {args.window:g} s window; load average {load[0]:.2f}")
    print(f"{'process':28} {'CPU s':>7} {'% of a core':>12}")
    total = 0.0
    for role, seconds in sorted(result):
        share = 100 * seconds / args.window
        total += share
        print(f"{role:28} {seconds:7.2f} {share:11.2f}%")
    print(f"{'total':28} {'':7} {total:11.2f}%   goal < 2 %: {'yes' if total < 2 else 'no'}")


if __name__ == "__main__":
    main()
