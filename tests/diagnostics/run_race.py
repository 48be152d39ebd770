"""One process of the double-click race: log in as a user, say "ready", wait for the
start file to appear, post "Run" for a step, print the answer and the runs it shows
as JSON. Run by test_run_twice.py as `python -m tests.diagnostics.run_race USER_ID
URL START_FILE` with DATABASE_URL naming the test database."""

from __future__ import annotations

import json
import os
import re
import sys
import time


def main(user_id: str, url: str, start: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from tests.diagnostics import engine_probes  # noqa: F401  (registers test.echo)

    setup_test_environment()
    client = Client()
    client.force_login(get_user_model().objects.get(pk=int(user_id)))
    connection.ensure_connection()
    print("ready", flush=True)
    deadline = time.monotonic() + 120
    while not os.path.exists(start) and time.monotonic() < deadline:
        time.sleep(0.002)
    response = client.post(url, HTTP_HX_REQUEST="true")
    runs = sorted({int(n) for n in re.findall(r'id="check-run-(\d+)"', response.content.decode())})
    print(json.dumps({"status": response.status_code, "runs": runs}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
