"""A separate process appending to one incident's timeline through the real code:
`python -m tests.incidents.timeline_writer INCIDENT_ID USER_ID WRITER COUNT START_AT`.

Run with DATABASE_URL set to the test database. Notes go through the incident
service (which locks the incident); check results are appended the way a worker
records them, inside a transaction that goes on working for a few milliseconds
after the event is written (storing evidence, updating the run), so commits come
out of id order as they do in production. Starts at the epoch time START_AT so
all writers overlap."""

from __future__ import annotations

import os
import random
import sys
import time


def main(argv: list[str]) -> None:
    incident_id, user_id, writer, count = (int(a) for a in argv[:4])
    start_at = float(argv[4])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lotoops.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from incidents import services, timeline
    from incidents.models import EventKind, Incident

    incident = Incident.objects.get(pk=incident_id)
    user = get_user_model().objects.get(pk=user_id)
    rng = random.Random(writer)
    time.sleep(max(0.0, start_at - time.time()))
    for n in range(count):
        text = f"writer {writer} event {n}"
        if n % 3 == 0:
            services.add_note(incident, text, actor=user)
            continue
        with transaction.atomic():
            timeline.append_event(
                incident, EventKind.CHECK_RESULT, text, data={"outcome": "ok", "writer": writer}
            )
            time.sleep(rng.uniform(0, 0.015))


if __name__ == "__main__":
    main(sys.argv[1:])
