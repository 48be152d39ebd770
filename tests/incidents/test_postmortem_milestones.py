"""Milestones marked by hand: any timeline event can be marked "root cause
identified" or "mitigation applied" by a responder (a timeline event, undoable),
and the post-mortem's timeline and key times follow; bad input changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from incidents import services
from incidents.models import TimelineEvent
from incidents.postincident import milestones, postmortem
from incidents.reporting import exports
from tests.incidents.helpers import T0, lived

pytestmark = pytest.mark.django_db


def note_at(incident, text, minutes, actor):
    """A note as if written `minutes` after T0 (the event's time is what counts)."""
    event = services.add_note(incident, text, actor=actor)
    TimelineEvent.objects.filter(pk=event.pk).delete()  # re-create it with its time
    return TimelineEvent.objects.create(
        pk=event.pk, incident=incident, seq=event.seq, kind="note", message=text,
        actor=actor, created_at=T0 + timedelta(minutes=minutes),
    )  # fmt: skip


@pytest.fixture
def worked(responder):
    """Resolved after 120 min; the cause was found by hand in a log line at 09:30."""
    incident = lived(responder)
    log_line = note_at(
        incident, "pgbouncer log: pool exhausted (max_client_conn 100)", 30, responder
    )
    action = note_at(incident, "Raised max_client_conn to 400 by hand", 40, responder)
    return incident, log_line, action


def post(client, incident, **data):
    return client.post(
        reverse("incidents:milestone", args=[incident.pk]), data, HTTP_HX_REQUEST="true"
    )


def marks(incident):
    return incident.timeline.filter(data__has_key="milestone").count()


def test_marking_by_hand_completes_the_report_timeline_and_key_times(client, responder, worked):
    incident, log_line, action = worked
    client.force_login(responder)
    assert post(client, incident, event=log_line.pk, milestone="root_cause").status_code == 204
    assert post(client, incident, event=action.pk, milestone="mitigation").status_code == 204
    event = incident.timeline.filter(data__milestone="root_cause").get()
    assert event.actor == responder and event.data["marks"] == log_line.pk
    assert "marked “pgbouncer log: pool exhausted" in event.message
    assert "as root cause identified" in event.message

    # The post-mortem's timeline (saved before the marks) shows both, in order.
    text = exports.incident_markdown(exports.incident_report(incident))
    assert "- 09:30 - Root cause identified: pgbouncer log: pool exhausted" in text
    assert "- 09:40 - Mitigation applied: Raised max_client_conn to 400 by hand" in text
    assert "- 09:50 - Status set to mitigated: ana moved" in text  # not the milestone now
    assert "marked “" not in text  # the marks themselves are not report lines
    assert "**Root cause identified:** 09:30 (30m 00s after the first alert)" in text
    assert "**Mitigation applied:** 09:40 (40m 00s after the first alert)" in text
    # A fresh draft says so too.
    draft = postmortem.draft_for(incident)
    assert "Marked as the root cause: pgbouncer log: pool exhausted" in draft.root_cause
    assert "Marked as the mitigation: Raised max_client_conn" in draft.resolution
    assert {log_line.pk, action.pk} <= set(draft.timeline_event_ids)
    # And the post-mortem page.
    page = client.get(reverse("incidents:postmortem", args=[incident.pk])).content.decode()
    assert "30m 00s after the first alert" in page


def test_without_marks_the_milestones_come_from_the_record(responder, worked):
    incident, _, _ = worked
    text = exports.incident_markdown(exports.incident_report(incident))
    assert (
        "- 09:50 - Mitigation applied: ana moved the incident from acknowledged to mitigated"
        in text
    )
    assert "**Root cause identified:** not marked yet" in text
    assert "**Mitigation applied:** 09:50 (50m 00s after the first alert)" in text


def test_undo_takes_the_mark_back_and_a_replay_changes_nothing(client, responder, worked):
    incident, log_line, _ = worked
    client.force_login(responder)
    assert post(client, incident, event=log_line.pk, milestone="root_cause").status_code == 204
    # The same POST again (a double click, a replay): refused, nothing written.
    replay = post(client, incident, event=log_line.pk, milestone="root_cause")
    assert replay.status_code == 422 and "already marked" in replay.content.decode()
    assert marks(incident) == 1
    mark = incident.timeline.get(data__has_key="milestone")
    assert post(client, incident, undo=mark.pk).status_code == 204
    assert marks(incident) == 2
    undone = post(client, incident, undo=mark.pk)
    assert undone.status_code == 422 and "already undone" in undone.content.decode()
    assert marks(incident) == 2
    found = milestones.incident_milestones(incident)
    assert found.events["root_cause"] == [] and found.marked[log_line.pk] == {}
    text = exports.incident_markdown(exports.incident_report(incident))
    assert "Root cause identified: pgbouncer" not in text
    # Marked again after the undo: a new decision, a new mark.
    assert post(client, incident, event=log_line.pk, milestone="root_cause").status_code == 204
    assert milestones.incident_milestones(incident).events["root_cause"] == [log_line.pk]


def test_bad_input_changes_nothing(client, responder, worked):
    incident, log_line, _ = worked
    other = lived(responder, title="Another incident")
    foreign = other.timeline.first()
    client.force_login(responder)
    before = incident.timeline.count(), other.timeline.count()
    for data, message in [
        ({"event": foreign.pk, "milestone": "root_cause"}, "not on this incident"),
        ({"event": log_line.pk, "milestone": "the_cause"}, "Choose"),
        ({"event": "x", "milestone": "root_cause"}, "not on this incident"),
        ({"event": str(2**64), "milestone": "mitigation"}, "not on this incident"),
        ({"undo": log_line.pk}, "not a milestone mark"),
        ({"undo": "nope"}, "not a milestone mark"),
    ]:
        response = post(client, incident, **data)
        assert response.status_code == 422, data
        assert message in response.content.decode(), data
    # A mark of the other incident cannot be undone through this one.
    other_mark = milestones.mark(other, foreign.pk, "root_cause", actor=responder)
    assert post(client, incident, undo=other_mark.pk).status_code == 422
    # A mark cannot be marked.
    mine = milestones.mark(incident, log_line.pk, "mitigation", actor=responder)
    response = post(client, incident, event=mine.pk, milestone="root_cause")
    assert response.status_code == 422 and "cannot itself be marked" in response.content.decode()
    assert (incident.timeline.count(), other.timeline.count()) == (before[0] + 1, before[1] + 1)


def test_only_who_may_work_the_incident_marks_and_sees_the_control(
    client, responder, viewer, worked
):
    incident, log_line, _ = worked
    client.force_login(viewer)
    assert post(client, incident, event=log_line.pk, milestone="root_cause").status_code == 403
    assert marks(incident) == 0
    page = client.get(reverse("incidents:detail", args=[incident.pk])).content.decode()
    assert 'data-mark="' not in page
    client.force_login(responder)
    page = client.get(reverse("incidents:detail", args=[incident.pk])).content.decode()
    assert f'data-mark="{log_line.pk}-root_cause"' in page
    assert "__lotoops_csrf_token__" not in page and 'name="csrfmiddlewaretoken"' in page
    # Without JavaScript: a plain POST, then back to the incident.
    response = client.post(
        reverse("incidents:milestone", args=[incident.pk]),
        {"event": log_line.pk, "milestone": "root_cause"},
    )
    assert response.status_code == 302 and marks(incident) == 1
    page = client.get(reverse("incidents:detail", args=[incident.pk])).content.decode()
    assert "Undo this mark" in page


MARKER = """
import os, sys, time
import django
django.setup()
from django.contrib.auth import get_user_model
from incidents.models import Incident
from incidents.postincident import milestones
from incidents.services import IncidentError
incident_id, user_id, event_id, start_at = sys.argv[1:5]
incident = Incident.objects.get(pk=int(incident_id))
user = get_user_model().objects.get(pk=int(user_id))
time.sleep(max(0.0, float(start_at) - time.time()))
try:
    milestones.mark(incident, int(event_id), "root_cause", actor=user)
    print("marked")
except IncidentError as exc:
    print("refused", exc)
"""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_same_mark_from_several_processes_at_once_is_written_once(responder):
    """Four processes (four responders' replays) mark the same event at the same moment."""
    import subprocess
    import sys
    import time

    from tests.incidents.live_helpers import subprocess_env

    incident = lived(responder)
    target = incident.timeline.first()
    start_at = time.time() + 4
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                MARKER,
                str(incident.pk),
                str(responder.pk),
                str(target.pk),
                str(start_at),
            ],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    answers = [proc.communicate(timeout=60) for proc in procs]
    outputs = sorted(out.strip() for out, _ in answers)
    assert [o.split()[0] for o in outputs] == ["marked", "refused", "refused", "refused"], answers
    assert all("already marked" in o for o in outputs[1:])
    assert incident.timeline.filter(data__milestone="root_cause").count() == 1
