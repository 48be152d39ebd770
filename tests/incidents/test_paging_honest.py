"""Honest paging: "sent" only when a channel that delivers took the page; Django's
console (or in-memory, dummy, file) email backend is "not delivered", in the database,
on the timeline and on the card; nobody reachable, contacts without an address and
an empty rota are warnings on the incident page and the dashboard; links point at the
address the run command serves."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from incidents import services
from incidents.models import (
    EscalationContact,
    EscalationRole,
    EventKind,
    NotificationStatus,
    Rotation,
    RotationMember,
)
from incidents.paging import outbox, reach
from incidents.paging import tasks as paging_tasks
from tests import factories
from tests.incidents.escalation_helpers import give_contacts_addresses, weekly_rota
from tests.incidents.fake_servers import SmtpRecorder, free_port

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
CONSOLE = "django.core.mail.backends.console.EmailBackend"


@pytest.fixture(autouse=True)
def _no_other_channels(settings):
    settings.SLACK_BOT_TOKEN = settings.SLACK_WEBHOOK_URL = settings.NOTIFY_WEBHOOK_URL = ""
    settings.EMAIL_BACKEND = CONSOLE


@pytest.fixture
def smtp(settings):
    recorder = SmtpRecorder()
    controller = Controller(recorder, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = (
        "127.0.0.1",
        controller.port,
        5,
    )
    yield recorder
    controller.stop()


def paged(responder, **kw):
    incident = factories.declare(actor=responder, severity="P1", **kw)
    paging_tasks.page_incident(incident.pk)
    return incident


def deliver_all(incident) -> list[str]:
    rows = incident.notifications.filter(status=NotificationStatus.PENDING)
    return [outbox.deliver(pk)[0] for pk in rows.values_list("pk", flat=True)]


@pytest.mark.parametrize(
    ("backend", "said"),
    [
        (CONSOLE, "printed to the console: not delivered"),
        ("django.core.mail.backends.locmem.EmailBackend", "kept in memory (the test backend)"),
        ("django.core.mail.backends.dummy.EmailBackend", "discarded (the dummy backend)"),
    ],
)
def test_a_page_through_a_local_email_backend_is_not_delivered_not_sent(
    client, responder, settings, backend, said, capsys
):
    settings.EMAIL_BACKEND = backend
    weekly_rota()
    give_contacts_addresses()
    incident = paged(responder)
    assert set(deliver_all(incident)) == {"not delivered"}
    rows = incident.notifications.all()
    assert set(rows.values_list("status", flat=True)) == {NotificationStatus.NOT_DELIVERED}
    assert all(said in row.last_error for row in rows)
    assert not rows.filter(sent_at__isnull=False).exists()
    events = incident.timeline.filter(kind=EventKind.NOTIFICATION)
    assert set(events.values_list("data__status", flat=True)) == {"not_delivered"}
    assert f"Page to Tech lead Tess Lead by email {said}" in events.last().message
    if backend == CONSOLE:
        assert "tess@lotolink.test" in capsys.readouterr().out  # it was printed, indeed
    client.force_login(responder)
    html = client.get(incident.get_absolute_url()).content.decode()
    card = html[html.index('id="whos-told"') :]
    card = card[: card.index("</section>")]
    assert said in card
    assert ">Sent<" not in card
    assert "Nobody can be reached for this incident." in card


def test_a_page_a_real_smtp_server_took_is_sent_and_nobody_is_unreachable(client, responder, smtp):
    weekly_rota()
    give_contacts_addresses()
    incident = paged(responder)
    assert set(deliver_all(incident)) == {"sent"}
    told = {to[0] for to, _ in smtp.messages}
    assert "tess@lotolink.test" in told and told & {"olga@lotolink.test", "omar@lotolink.test"}
    assert set(incident.notifications.values_list("status", flat=True)) == {"sent"}
    client.force_login(responder)
    html = client.get(incident.get_absolute_url()).content.decode()
    assert "Nobody can be reached" not in html
    assert "reach-warning" not in html
    dashboard = client.get("/").content.decode()
    assert "Nobody can be reached" not in dashboard


def test_contacts_without_an_address_are_a_warning(client, responder, smtp):
    weekly_rota()
    give_contacts_addresses()
    EscalationContact.objects.filter(role=EscalationRole.TECH_LEAD).update(email="")
    incident = paged(responder)
    row = incident.notifications.get(role=EscalationRole.TECH_LEAD)
    assert row.status == NotificationStatus.NO_ADDRESS
    client.force_login(responder)
    html = client.get(incident.get_absolute_url()).content.decode()
    assert "No address to page: Tech lead Tess Lead." in html
    assert "no email address: not told this way" in html
    # The on-call engineer's page is on its way: someone can be reached.
    assert "Nobody can be reached" not in html


def test_nobody_on_the_rota_and_console_email_warn_on_the_page_and_the_dashboard(client, responder):
    incident = paged(responder)  # no rota, seeded contacts without addresses
    client.force_login(responder)
    html = client.get(incident.get_absolute_url()).content.decode()
    warning = html[html.index('class="reach-warning nobody"') :]
    warning = warning[: warning.index("</div>")]
    assert "Nobody can be reached for this incident." in warning
    assert "Nobody is on the on-call rota right now" in warning
    assert "Email is printed to the console: not delivered" in warning
    assert "No notification channel delivers: set EMAIL_HOST (SMTP)" in warning
    dashboard = client.get("/").content.decode()
    banner = dashboard[dashboard.index('class="reach-warning nobody"') :]
    banner = banner[: banner.index("</div>")]
    assert f'<a href="{incident.get_absolute_url()}">#{incident.pk}</a>' in banner
    assert "Nobody is on the on-call rota right now" in banner
    # The on-call card says it in words, not small grey text.
    assert '<p class="warning"><strong>Nobody on the rota right now</strong>' in (dashboard)


def test_an_acknowledged_incident_is_not_flagged_as_unreachable(client, responder):
    incident = paged(responder)
    services.acknowledge_incident(incident, actor=responder)
    client.force_login(responder)
    dashboard = client.get("/").content.decode()
    assert f">#{incident.pk}</a>" not in dashboard.split("reach-warning", 1)[-1].split("</div>")[0]
    assert reach.for_incident(incident).nobody is False


def test_the_dashboard_finds_unreachable_incidents_in_one_query(
    responder, smtp, django_assert_num_queries
):
    weekly_rota()
    give_contacts_addresses()
    reached = paged(responder)
    alone = [factories.declare(actor=responder, title=f"Down {n}") for n in range(5)]
    ids = [reached.pk] + [i.pk for i in alone]
    with django_assert_num_queries(1):
        assert reach.unreachable_incidents(ids) == {i.pk for i in alone}


def test_a_one_person_rota_says_the_same_person_continues(client, responder, runbook):
    rotation = Rotation.objects.create(
        name="Solo",
        time_zone="America/Santo_Domingo",
        start_date=date(2026, 1, 5),
        handoff_time=time(9),
        shift_days=7,
    )
    RotationMember.objects.create(rotation=rotation, name="Sol", email="sol@lotolink.test")
    client.force_login(responder)
    html = client.get("/").content.decode()
    card = html[html.index('id="on-call"') :]
    card = card[: card.index("</section>")]
    assert "Now: <strong>Sol</strong>" in card
    assert "stays on call (the only person on the rota)" in card
    assert "Next:" not in card and "until" not in card


def test_rota_times_are_shown_in_the_rotas_zone(client, responder, runbook):
    weekly_rota()  # hands over Mondays 09:00 in Santo Domingo
    client.force_login(responder)
    html = client.get("/").content.decode()
    card = html[html.index('id="on-call"') :]
    card = card[: card.index("</section>")]
    assert "09:00 AST (America/Santo_Domingo)" in card


def _site_url(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("SITE_URL", "PORT", "HOST")}
    result = subprocess.run(
        [sys.executable, "-c", "from lotoops import settings; print(settings.SITE_URL)"],
        cwd=ROOT,
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip().splitlines()[-1]


def test_site_url_defaults_to_the_address_the_run_command_serves():
    assert _site_url() == "http://127.0.0.1:8000"
    assert _site_url(PORT="8123") == "http://127.0.0.1:8123"
    assert _site_url(HOST="0.0.0.0", PORT="9001") == "http://127.0.0.1:9001"  # noqa: S104
    assert _site_url(PORT="8123", SITE_URL="https://ops.lotolink.com") == "https://ops.lotolink.com"


def test_acknowledge_links_follow_the_served_port(responder, settings, smtp):
    settings.SITE_URL = "http://127.0.0.1:8123"
    weekly_rota()
    give_contacts_addresses()
    incident = paged(responder)
    deliver_all(incident)
    bodies = [m.get_payload(decode=True).decode() for _, m in smtp.messages]
    assert bodies and all("http://127.0.0.1:8123/ack/" in b for b in bodies)


def test_pages_waiting_to_go_by_console_email_do_not_count_as_reaching_anyone(responder):
    weekly_rota()
    give_contacts_addresses()
    incident = paged(responder)
    pending = incident.notifications.filter(status=NotificationStatus.PENDING)
    assert pending.exists()
    assert reach.for_incident(incident).nobody is True
