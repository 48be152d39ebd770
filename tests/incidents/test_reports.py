"""Period figures on hand-computed fixtures, the CSV round trip, the PDF, the
reports page with its charts, and bad input."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse
from pypdf import PdfReader

from incidents import services
from incidents.models import ActionItem, Incident, Status
from incidents.reporting import figures
from tests.incidents.helpers import T0, lived

pytestmark = pytest.mark.django_db

M = timedelta(minutes=1)


def row(pk, severity="P1", *, ack=None, resolve=None, deadline=30, declared=T0, **kw):
    """P1: 30-minute response time."""
    return figures.Row(
        pk=pk,
        title=f"incident {pk}",
        severity=severity,
        category="payment",
        status="resolved" if resolve is not None else "acknowledged",
        restricted=False,
        declared_at=declared,
        response_deadline=declared + deadline * M,
        acknowledged_at=declared + ack * M if ack is not None else None,
        resolved_at=declared + resolve * M if resolve is not None else None,
        **kw,
    )


NOW = T0 + timedelta(days=2)

# Hand-computed:
#   1  P1 acked 10 min, resolved 60 min                  -> met
#   2  P1 acked 40 min (late), resolved 240 min          -> breached
#   3  P1 never acked, deadline long past, open          -> breached, no TTA/TTR
#   4  P1 reopened: acked 20 min; final resolution 180 min -> met, TTR 180
#   5  P1 never acked, declared 10 min before NOW        -> pending
#   6  P3 acked 120 min (24 h SLA), still open            -> met, no TTR
# P1: MTTA (10+40+20)/3 = 23:20; MTTR (60+240+180)/3 = 160 min; met 2, breached 2,
#     pending 1 -> 50.0%.  All: MTTA (10+40+20+120)/4 = 47:30; met 3 of 5 judged = 60.0%.
FIXTURE = [
    row(1, ack=10, resolve=60),
    row(2, ack=40, resolve=240),
    row(3),
    row(4, ack=20, resolve=180, reopened_at=T0 + 90 * M),
    row(5, declared=NOW - 10 * M),
    row(6, "P3", ack=120, deadline=24 * 60),
]


def test_mtta_mttr_and_sla_on_hand_computed_incidents():
    p1, p3, total = figures.by_severity(FIXTURE, NOW)
    assert p1.label == "P1" and p1.count == 5
    assert p1.mtta == timedelta(minutes=23, seconds=20)
    assert p1.mttr == timedelta(minutes=160)
    assert (p1.acknowledged, p1.resolved) == (3, 3)
    assert (p1.met, p1.breached, p1.pending) == (2, 2, 1)
    assert p1.compliance == 0.5
    assert (p3.mtta, p3.mttr, p3.met, p3.compliance) == (120 * M, None, 1, 1.0)
    assert total.label == "All" and total.count == 6
    assert total.mtta == timedelta(minutes=47, seconds=30)
    assert total.compliance == 0.6
    assert figures.percent(total.compliance) == "60.0%"


def test_no_incidents_have_no_figures():
    (total,) = figures.by_severity([], NOW)
    assert (total.count, total.mtta, total.mttr, total.compliance) == (0, None, None, None)


def test_rows_from_the_database_count_a_reopened_incident_by_its_final_resolution(responder):
    incident = lived(responder, ack=5, resolve=60)
    services.reopen_incident(incident, actor=responder, reason="again", now=T0 + 90 * M)
    services.transition_incident(incident, Status.RESOLVED, actor=responder, now=T0 + 150 * M)
    never = lived(responder, ack=None, title="Never acknowledged")
    (r1, r2) = figures.rows_for(Incident.objects.all())
    assert figures.ttr(r1) == 150 * M and figures.tta(r1) == 5 * M
    assert r1.reopened_at == T0 + 90 * M
    assert figures.sla_state(r2, NOW) == figures.BREACHED and figures.tta(r2) is None
    assert r2.pk == never.pk


def test_weekly_counts_and_mttr_trend():
    weekly = figures.weekly_by_severity(FIXTURE, T0.date(), T0.date() + timedelta(days=8))
    assert [w for w, _ in weekly] == [T0.date(), T0.date() + timedelta(days=7)]
    assert weekly[0][1] == {"P1": 5, "P3": 1}
    assert weekly[1][1] == {}
    trend = figures.weekly_mttr(FIXTURE, T0.date(), T0.date())
    assert trend == [(T0.date(), timedelta(minutes=160))]


# --- through the pages ---------------------------------------------------------------


@pytest.fixture
def period(responder, other_responder):
    met = lived(responder, ack=10, resolve=60)
    late = lived(responder, ack=45, resolve=300, title="Banca Central down", category="banca")
    never = lived(responder, ack=None, severity="P2", title="Slow queries", category="database")
    secret = lived(responder, category="security", title="Leaked API key")
    ActionItem.objects.create(incident=met, text="Add an alert", owner=other_responder)
    return {"met": met, "late": late, "never": never, "secret": secret}


QUERY = {"start": "2026-03-01", "end": "2026-03-07"}


def test_the_csv_round_trips(client, responder, period):
    client.force_login(responder)
    response = client.get(reverse("incidents:reports_csv"), QUERY)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    by_id = {int(r["id"]): r for r in rows}
    assert set(by_id) == {i.pk for i in period.values()}  # ana declared the secret one
    met = by_id[period["met"].pk]
    assert met["severity"] == "P1" and met["category"] == "payment"
    assert met["declared_at"] == T0.isoformat()
    assert met["acknowledged_at"] == (T0 + 10 * M).isoformat()
    assert met["mitigated_at"] == (T0 + 50 * M).isoformat()
    assert met["resolved_at"] == (T0 + 60 * M).isoformat()
    assert (met["time_to_acknowledge_seconds"], met["time_to_resolve_seconds"]) == ("600", "3600")
    assert (met["sla"], met["open_action_items"]) == ("met", "1")
    late = by_id[period["late"].pk]
    assert (late["sla"], late["time_to_resolve_seconds"]) == ("breached", "18000")
    never = by_id[period["never"].pk]
    assert (never["sla"], never["acknowledged_at"], never["time_to_acknowledge_seconds"]) == (
        "breached",
        "",
        "",
    )


def test_restricted_incidents_only_reach_users_allowed_to_see_them(client, other_responder, period):
    client.force_login(other_responder)
    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get(reverse("incidents:reports_csv"), QUERY).content.decode("utf-8-sig")
            )
        )
    )
    assert period["secret"].pk not in {int(r["id"]) for r in rows}
    assert len(rows) == 3
    page = client.get(reverse("incidents:reports"), QUERY).content.decode()
    assert "Leaked API key" not in page


def test_filters_narrow_the_period(client, responder, period):
    client.force_login(responder)
    response = client.get(reverse("incidents:reports_csv"), {**QUERY, "category": "banca"})
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert [int(r["id"]) for r in rows] == [period["late"].pk]


def test_the_period_pdf_holds_the_figures_and_the_incidents(client, responder, period):
    client.force_login(responder)
    response = client.get(reverse("incidents:reports_pdf"), QUERY)
    assert response.status_code == 200
    text = " ".join(
        " ".join(p.extract_text() for p in PdfReader(io.BytesIO(response.content)).pages).split()
    )
    assert "Incident report 2026-03-01 to 2026-03-07" in text
    assert "By severity" in text and "Charts" in text
    assert "Banca Central down" in text
    assert "Add an alert" in text
    # P1 (ana sees the security one too): acked after 10, 45 and 10 minutes:
    # MTTA 21m 40s; 2 met, 1 breached -> 66.7%. MTTR (60 + 300 + 120) / 3 = 2h 40m.
    assert "P1 3 3 21m 40s 3 2h 40m 2 1 0 66.7%" in text


def test_the_reports_page_shows_figures_and_inline_svg_charts(client, responder, period):
    client.force_login(responder)
    response = client.get(reverse("incidents:reports"), QUERY)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("<svg") == 3
    assert "Incidents per week by severity" in html and "MTTR trend" in html
    assert 'data-severity="P1"' in html and "50.0%" in html
    assert "http://" not in html.split("<svg", 1)[1].replace("http://www.w3.org/2000/svg", "")
    assert '<script src="http' not in html


def test_the_reports_page_defaults_to_the_last_30_days(client, responder):
    client.force_login(responder)
    response = client.get(reverse("incidents:reports"))
    assert response.status_code == 200
    assert "No incidents in this period." in response.content.decode()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "", "end": ""}, "This field is required."),
        ({"start": "2026-03-07", "end": "2026-03-01"}, "before it starts"),
        ({"start": "2026-13-01", "end": "2026-03-01"}, "Enter a valid date."),
    ],
)
@pytest.mark.parametrize(
    "name", ["incidents:reports", "incidents:reports_csv", "incidents:reports_pdf"]
)
def test_an_empty_or_inverted_range_is_a_clear_422(client, responder, params, message, name):
    client.force_login(responder)
    response = client.get(reverse(name), params)
    assert response.status_code == 422
    assert message in response.content.decode()


def test_the_period_report_costs_a_fixed_number_of_queries(
    client, responder, other_responder, django_assert_max_num_queries
):
    for n in range(12):
        incident = lived(responder, at=T0 + n * M)
        ActionItem.objects.create(incident=incident, text=f"item {n}", owner=other_responder)
    client.force_login(responder)
    with django_assert_max_num_queries(12):
        client.get(reverse("incidents:reports_csv"), QUERY)
    with django_assert_max_num_queries(14):
        client.get(reverse("incidents:reports"), QUERY)
