"""One process of the replay race: log in as a user, wait for the start time, post
the confirmation, print the answer as JSON. Run by test_confirmation_replay.py as
`python -m tests.diagnostics.confirm_race USER_ID URL TOKEN START` with
DATABASE_URL naming the test database."""

from __future__ import annotations

import json
import os
import sys
import time


def main(user_id: str, url: str, token: str, start: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from tests.diagnostics import engine_probes  # noqa: F401  (registers test.restart)

    setup_test_environment()
    client = Client()
    client.force_login(get_user_model().objects.get(pk=int(user_id)))
    connection.ensure_connection()
    time.sleep(max(0.0, float(start) - time.time()))
    response = client.post(url, {"stage": "confirm", "token": token}, HTTP_HX_REQUEST="true")
    print(json.dumps({"status": response.status_code, "body": response.content.decode()}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
