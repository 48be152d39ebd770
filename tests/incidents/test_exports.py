"""One incident's report: Markdown in exactly the runbook template's structure, PDF
with the same facts; only for users who may see the incident."""

from __future__ import annotations

import io
import re
from datetime import date, timedelta

import pytest
from django.urls import reverse
from pypdf import PdfReader

from incidents.models import ActionItem
from incidents.postincident import postmortem
from incidents.reporting import exports
from tests.incidents.helpers import T0, lived

pytestmark = pytest.mark.django_db

TEMPLATE_SECTIONS = [
    "Summary",
    "Timeline",
    "Root Cause",
    "Impact",
    "Resolution",
    "Action Items",
    "Lessons Learned",
]


@pytest.fixture
def reported(responder, other_responder):
    incident = lived(responder, commander=responder, summary="Webhooks failed with 500s")
    pm = incident.postmortem
    texts = {
        "root_cause": "Connection pool of 5 after a config change",
        "impact": None,
        "lessons_learned": "Alert on webhook lag, not only on errors",
    }
    for section, text in texts.items():
        pm.refresh_from_db()
        if section == "impact":
            values = {
                "impact_users": "120 players could not buy tickets",
                "impact_revenue": "About 800 USD of delayed sales",
                "impact_data": "None: every purchase is in the ledger",
            }
        else:
            values = {section: text}
        postmortem.save_section(
            pm, section, values, version=pm.version, original={}, actor=responder
        )
    ActionItem.objects.create(
        incident=incident, text="Raise the pool | size", owner=other_responder,
        due_date=date(2026, 3, 9),
    )  # fmt: skip
    incident.refresh_from_db()
    return incident


def parse_markdown(text: str) -> dict:
    """The report back into its parts, by the template's structure."""
    lines = text.splitlines()
    head = re.fullmatch(r"# Incident Report: (.+)", lines[0])
    assert head, lines[0]
    fields = dict(re.findall(r"^\*\*(Date|Duration|Severity|Author):\*\* (.+)$", text, re.M))
    sections: dict[str, list[str]] = {}
    current = None
    for line in lines[1:]:
        if line.startswith("## "):
            current = line[3:]
            sections[current] = []
        elif current is not None and line.strip():
            sections[current].append(line)
    return {"title": head.group(1), "fields": fields, "sections": sections}


def test_the_markdown_export_has_every_template_section_filled_from_the_incident(
    client, responder, reported
):
    client.force_login(responder)
    response = client.get(reverse("incidents:export_md", args=[reported.pk]))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    text = response.content.decode()
    report = parse_markdown(text)
    assert report["title"] == "Payment webhooks failing"
    assert report["fields"] == {
        "Date": "2026-03-02",
        "Duration": "09:00 - 11:00 (2.0 hours)",
        "Severity": "P1",
        "Author": "ana",
    }
    assert list(report["sections"]) == TEMPLATE_SECTIONS
    s = report["sections"]
    assert s["Summary"] == ["Webhooks failed with 500s"]
    timeline = [re.fullmatch(r"- (\d\d:\d\d) - (.+)", line) for line in s["Timeline"]]
    assert all(timeline), s["Timeline"]
    assert [(m.group(1), m.group(2).split(":")[0]) for m in timeline] == [
        ("09:00", "First alert triggered"),
        ("09:10", "On-call acknowledged"),
        ("09:50", "Mitigation applied"),
        ("11:00", "Service restored"),
    ]
    assert s["Root Cause"] == ["Connection pool of 5 after a config change"]
    assert s["Impact"] == [
        "- Number of affected users: 120 players could not buy tickets",
        "- Revenue impact: About 800 USD of delayed sales",
        "- Data impact: None: every purchase is in the ledger",
    ]
    assert "rolled back the deploy" in "\n".join(s["Resolution"])
    assert s["Action Items"] == [
        "| Item | Owner | Due Date | Status |",
        "|------|-------|----------|--------|",
        "| Raise the pool \\| size | @ben | 2026-03-09 | Open |",
    ]
    assert s["Lessons Learned"] == ["Alert on webhook lag, not only on errors"]


def test_an_event_on_another_day_says_which_day(responder):

    incident = lived(responder, resolve=60 * 26)
    text = exports.incident_markdown(exports.incident_report(incident))
    assert "**Duration:** 09:00 - 11:00 (26.0 hours)" in text
    assert re.search(r"^- 11:00 - Service restored: .+ \(2026-03-03\)$", text, re.M)


def test_text_cannot_break_the_structure(responder):

    incident = lived(responder)
    pm = incident.postmortem
    postmortem.save_section(
        pm, "summary", {"summary": "## Not a heading\nline two"}, version=pm.version,
        original={}, actor=responder,
    )  # fmt: skip
    text = exports.incident_markdown(exports.incident_report(incident))
    headings = re.findall(r"^## (.+)$", text, re.M)
    assert headings == TEMPLATE_SECTIONS


def test_the_pdf_holds_the_same_facts(client, responder, reported):
    client.force_login(responder)
    response = client.get(reverse("incidents:export_pdf", args=[reported.pk]))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    pdf = PdfReader(io.BytesIO(response.content))
    text = "\n".join(page.extract_text() for page in pdf.pages)
    flat = " ".join(text.split())
    for fact in [
        "Incident Report: Payment webhooks failing",
        "Date: 2026-03-02",
        "Duration: 09:00 - 11:00 (2.0 hours)",
        "Severity: P1",
        "Author: ana",
        "Webhooks failed with 500s",
        "First alert triggered",
        "Service restored",
        "Connection pool of 5 after a config change",
        "120 players could not buy tickets",
        "About 800 USD of delayed sales",
        "Raise the pool | size",
        "@ben",
        "2026-03-09",
        "Alert on webhook lag, not only on errors",
        *TEMPLATE_SECTIONS,
    ]:
        assert fact in flat, fact


def test_a_pdf_of_a_long_timeline_pages_on(responder):
    from incidents.services import add_note

    incident = lived(responder)
    for n in range(150):
        add_note(incident, f"note {n} with some words about what we saw", actor=responder)
    pm = incident.postmortem
    ids = list(incident.timeline.values_list("pk", flat=True))
    postmortem.save_timeline_selection(
        pm, ids, version=pm.version, original=pm.timeline_event_ids, actor=responder
    )
    pdf = PdfReader(io.BytesIO(exports.incident_pdf(exports.incident_report(incident))))
    assert len(pdf.pages) > 2
    assert "note 149" in "".join(p.extract_text() for p in pdf.pages)


def test_exporting_an_incident_you_may_not_see_is_404(client, responder, other_responder):
    hidden = lived(responder, category="security", title="Leaked key")
    client.force_login(other_responder)
    for name in ("incidents:export_md", "incidents:export_pdf"):
        assert client.get(reverse(name, args=[hidden.pk])).status_code == 404
    assert client.get(reverse("incidents:export_md", args=[999999])).status_code == 404


def test_an_unresolved_incident_exports_its_draft_as_far_as_it_goes(client, responder):
    incident = lived(responder, resolve=None)
    client.force_login(responder)
    text = client.get(reverse("incidents:export_md", args=[incident.pk])).content.decode()
    assert "**Duration:** 09:00 - ongoing" in text
    assert re.findall(r"^## (.+)$", text, re.M) == TEMPLATE_SECTIONS


def test_exports_cost_a_fixed_number_of_queries(
    client, responder, other_responder, django_assert_max_num_queries
):
    incident = lived(responder)
    for n in range(30):
        ActionItem.objects.create(
            incident=incident, text=f"item {n}", owner=other_responder,
            due_date=T0.date() + timedelta(days=n),
        )  # fmt: skip
    client.force_login(responder)
    with django_assert_max_num_queries(12):
        client.get(reverse("incidents:export_md", args=[incident.pk]))
