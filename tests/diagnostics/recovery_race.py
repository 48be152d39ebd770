"""One process of the recovery races: wait for the start time, then either run the
beat's recovery sweep (`sweep NOW_ISO`) or run the given check runs with the real
worker task (`runs ID,ID,…`), and print what it did as JSON. Run by test_recovery.py
as `python -m tests.diagnostics.recovery_race START MODE ARG` with DATABASE_URL
naming the test database."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime


def main(start: str, mode: str, arg: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")
    import django

    django.setup()
    from django.db import connection

    from diagnostics import recovery
    from diagnostics.tasks import run_check

    connection.ensure_connection()
    time.sleep(max(0.0, float(start) - time.time()))
    if mode == "sweep":
        started = recovery.start_due_watches(now=datetime.fromisoformat(arg))
        print(json.dumps({"started": started}))
    else:
        answers = [run_check.apply(args=(int(pk),)).get() for pk in arg.split(",")]
        print(json.dumps({"runs": answers}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
