"""One process of the recovery races: set Django up, say "ready", wait for "go" on
stdin, then either run the beat's recovery sweep (`sweep NOW_ISO`) or run the given
check runs with the real worker task (`runs ID,ID,…`), and print what it did as JSON.
Run by test_recovery.py as `python -m tests.diagnostics.recovery_race MODE ARG` with
DATABASE_URL naming the test database."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime


def main(mode: str, arg: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")
    import django

    django.setup()
    from django.db import connection

    from diagnostics import recovery
    from diagnostics.tasks import run_check

    connection.ensure_connection()
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every racer is up
    if mode == "sweep":
        started = recovery.start_due_watches(now=datetime.fromisoformat(arg))
        print(json.dumps({"started": started}))
    else:
        answers = [run_check.apply(args=(int(pk),)).get() for pk in arg.split(",")]
        print(json.dumps({"runs": answers}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
