"""One beat process of the impact races: wait for the start time, then run one
sweep and print what it made as JSON. Run by the tests as
`python -m tests.impact.beat_race regulatory|money NOW_ISO START` with DATABASE_URL
naming the test database (and a memory broker: what is enqueued goes nowhere)."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime


def main(what: str, now_iso: str, start: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")
    import django

    django.setup()
    from django.db import connection

    from diagnostics import impact
    from incidents.paging import regulatory

    now = datetime.fromisoformat(now_iso)
    connection.ensure_connection()
    time.sleep(max(0.0, float(start) - time.time()))
    if what == "regulatory":
        made = len(regulatory.escalate_due(now))
    else:
        made = impact.sample_open_incidents(now)
    print(json.dumps({"made": made}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
