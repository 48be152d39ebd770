"""The runbook's escalation table as a pure function: who is told at declaration for
each severity and flag, extended outages, and escalation until acknowledged."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from incidents.rules.escalation import (
    ContactRule,
    IncidentSnapshot,
    escalation_steps_due,
    next_escalation_at,
    who_to_tell,
)

ON_CALL, TECH_LEAD, MANAGER, CTO, LEGAL = 1, 2, 3, 4, 5
RULES = (
    ContactRule(ON_CALL, "on_call", 1, always=True),
    ContactRule(TECH_LEAD, "tech_lead", 2, severities=frozenset({"P0", "P1"})),
    ContactRule(
        MANAGER,
        "engineering_manager",
        3,
        severities=frozenset({"P0"}),
        extended_outage_after=timedelta(hours=2),
    ),
    ContactRule(
        CTO,
        "cto",
        4,
        categories=frozenset({"security"}),
        flags=frozenset({"security", "data_loss"}),
    ),
    ContactRule(LEGAL, "legal", 4, flags=frozenset({"data_breach", "regulatory"}), in_chain=False),
)
T0 = datetime(2026, 3, 7, 2, 58, tzinfo=UTC)
RESPONSE = {"P0": 15, "P1": 30, "P2": 120, "P3": 1440}
STEP = timedelta(minutes=15)


def incident(
    severity: str = "P1", *, flags: frozenset[str] = frozenset(), **kw
) -> IncidentSnapshot:
    base = IncidentSnapshot(
        severity=severity,
        category=kw.pop("category", "payment"),
        flags=flags,
        declared_at=T0,
        response_deadline=T0 + timedelta(minutes=RESPONSE[severity]),
        acknowledged=False,
        open=True,
    )
    return replace(base, **kw)


def told(snapshot: IncidentSnapshot, now: datetime = T0, **kw) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for page in who_to_tell(
        snapshot, RULES, now, interval=STEP, max_steps=kw.pop("max_steps", 8), **kw
    ):
        out.setdefault(page.reason, set()).add(page.contact)
    return out


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ("P0", {ON_CALL, TECH_LEAD, MANAGER}),
        ("P1", {ON_CALL, TECH_LEAD}),
        ("P2", {ON_CALL}),
        ("P3", {ON_CALL}),
    ],
)
def test_at_declaration_each_severity_tells_its_people(severity, expected):
    assert told(incident(severity)) == {"rule": expected}


@pytest.mark.parametrize(
    ("flag", "extra"),
    [("security", CTO), ("data_loss", CTO), ("data_breach", LEGAL), ("regulatory", LEGAL)],
)
def test_each_flag_adds_its_contact(flag, extra):
    assert told(incident("P2", flags=frozenset({flag}))) == {"rule": {ON_CALL, extra}}


def test_a_security_category_incident_tells_the_cto_without_a_flag():
    assert told(incident("P2", category="security")) == {"rule": {ON_CALL, CTO}}


def test_the_reasons_say_why_in_the_runbooks_words():
    pages = who_to_tell(
        incident("P1", flags=frozenset({"data_breach"})), RULES, T0, interval=STEP, max_steps=8
    )
    why = {p.contact: p.why for p in pages}
    assert why == {ON_CALL: "first response", TECH_LEAD: "P1 incident", LEGAL: "flag: data breach"}


def test_an_outage_lasting_past_the_threshold_tells_the_manager_once():
    acknowledged = incident("P1", acknowledged=True)
    assert "extended_outage" not in told(
        acknowledged, T0 + timedelta(hours=2) - timedelta(seconds=1)
    )
    assert told(acknowledged, T0 + timedelta(hours=2))["extended_outage"] == {MANAGER}
    # Already told by rule (a P0): not told again for the same incident.
    assert "extended_outage" not in told(incident("P0", acknowledged=True), T0 + timedelta(hours=3))
    assert "extended_outage" not in told(
        acknowledged, T0 + timedelta(hours=3), already_told=frozenset({MANAGER})
    )
    assert "extended_outage" not in told(replace(acknowledged, open=False), T0 + timedelta(hours=3))


def test_nothing_escalates_before_the_response_deadline():
    p2 = incident("P2")
    assert escalation_steps_due(p2, p2.response_deadline - timedelta(seconds=1), STEP) == 0
    assert set(told(p2, p2.response_deadline - timedelta(seconds=1))) == {"rule"}


def test_an_unacknowledged_incident_climbs_one_level_per_interval_then_pages_everyone_again():
    p2 = incident("P2")
    deadline = p2.response_deadline
    assert told(p2, deadline)["escalation-1"] == {TECH_LEAD}
    later = told(p2, deadline + 3 * STEP)
    assert later["escalation-1"] == {TECH_LEAD}
    assert later["escalation-2"] == {MANAGER}
    assert later["escalation-3"] == {CTO}  # not legal: outside the escalation chain
    assert later["escalation-4"] == {ON_CALL, TECH_LEAD, MANAGER, CTO}
    assert "escalation-5" not in later


def test_escalation_starts_above_everyone_already_told():
    p0 = incident("P0")
    assert told(p0, p0.response_deadline)["escalation-1"] == {CTO}
    assert told(p0, p0.response_deadline + STEP)["escalation-2"] == {
        ON_CALL,
        TECH_LEAD,
        MANAGER,
        CTO,
    }


def test_escalation_stops_the_moment_it_is_acknowledged_or_closed():
    p1 = incident("P1")
    much_later = p1.response_deadline + 10 * STEP
    assert set(told(replace(p1, acknowledged=True), much_later)) == {"rule", "extended_outage"}
    assert set(told(replace(p1, open=False), much_later)) == {"rule"}
    assert next_escalation_at(replace(p1, acknowledged=True), much_later, STEP, 8) is None


def test_steps_are_capped_and_the_next_one_is_announced():
    p1 = incident("P1")
    assert next_escalation_at(p1, T0, STEP, 3) == p1.response_deadline
    assert next_escalation_at(p1, p1.response_deadline, STEP, 3) == p1.response_deadline + STEP
    assert next_escalation_at(p1, p1.response_deadline + 5 * STEP, STEP, 3) is None
    steps = {r for r in told(p1, p1.response_deadline + 10 * STEP, max_steps=3) if "-" in r}
    assert steps == {"escalation-1", "escalation-2", "escalation-3"}


def test_deciding_twice_gives_the_same_pages():
    p1 = incident("P1", flags=frozenset({"security"}))
    now = p1.response_deadline + 2 * STEP
    first = who_to_tell(p1, RULES, now, interval=STEP, max_steps=8)
    assert first == who_to_tell(p1, RULES, now, interval=STEP, max_steps=8)
