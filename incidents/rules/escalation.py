"""Who must be told about an incident, and when: the runbook's escalation table as
a pure function. Snapshots in, decisions out; no database, no clock, no I/O.

Three reasons to tell someone:

- ``rule``: the contact's own "when to escalate" matches the incident (always /
  first response, its severity, its category, one of its flags). Told once; a
  change of severity or flags that makes a new contact match tells that contact.
- ``extended_outage``: the incident has stayed open past the contact's
  extended-outage duration (and the contact was not told already).
- ``escalation-<n>``: nobody acknowledged by the response deadline. Step 1 pages
  the next level of the escalation chain above everyone told by rule, each
  following step (every ``interval``) the next level again; past the top level a
  step pages everyone told so far once more, until the cap of steps. The steps
  stop the moment the incident is acknowledged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from .text import format_duration


@dataclass(frozen=True)
class ContactRule:
    id: int
    role: str
    level: int
    always: bool = False
    severities: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    flags: frozenset[str] = frozenset()
    extended_outage_after: timedelta | None = None
    in_chain: bool = True


@dataclass(frozen=True)
class IncidentSnapshot:
    severity: str
    category: str
    flags: frozenset[str]
    declared_at: datetime
    response_deadline: datetime
    acknowledged: bool
    open: bool


@dataclass(frozen=True)
class Page:
    contact: int
    reason: str  # rule | extended_outage | escalation-<n>
    why: str  # for people: "P0/P1 incidents", "flag: data breach", "not acknowledged…"


def rule_match(incident: IncidentSnapshot, rule: ContactRule) -> str | None:
    """Why this contact's rule calls for being told of this incident, or None."""
    if rule.always:
        return "first response"
    if incident.severity in rule.severities:
        return f"{incident.severity} incident"
    flags = sorted(incident.flags & rule.flags)
    if flags:
        return "flag: " + ", ".join(f.replace("_", " ") for f in flags)
    if incident.category in rule.categories:
        return f"{incident.category.replace('_', ' ')} incident"
    return None


# The categories declared restricted by default (services.declare_incident).
RESTRICTED_CATEGORIES = frozenset({"security"})


def may_page_on_restricted(rule: ContactRule) -> bool:
    """Whether this contact could be told of a security (restricted) incident: by
    "always", a severity, a flag, the escalation chain, an extended outage or one of
    the restricted categories. Only a contact out of the chain, told only of other
    categories, never is."""
    return bool(
        rule.always
        or rule.severities
        or rule.flags
        or rule.in_chain
        or rule.extended_outage_after
        or rule.categories & RESTRICTED_CATEGORIES
    )


def escalation_steps_due(incident: IncidentSnapshot, now: datetime, interval: timedelta) -> int:
    """How many escalation steps are due by `now` (0 once acknowledged or closed)."""
    if incident.acknowledged or not incident.open or now < incident.response_deadline:
        return 0
    return 1 + int((now - incident.response_deadline) / interval)


def next_escalation_at(
    incident: IncidentSnapshot, now: datetime, interval: timedelta, max_steps: int
) -> datetime | None:
    """When the next step falls due (for the page), None when none will."""
    if incident.acknowledged or not incident.open:
        return None
    done = escalation_steps_due(incident, now, interval)
    if done >= max_steps:
        return None
    return incident.response_deadline + done * interval


def who_to_tell(
    incident: IncidentSnapshot,
    rules: tuple[ContactRule, ...],
    now: datetime,
    *,
    interval: timedelta,
    max_steps: int,
    already_told: frozenset[int] = frozenset(),
) -> list[Page]:
    """Every page that should exist by `now`. The caller creates the missing ones
    (each (contact, reason) at most once), so calling this again is harmless."""
    pages: list[Page] = []
    matched: list[ContactRule] = []
    for rule in rules:
        why = rule_match(incident, rule)
        if why is not None:
            matched.append(rule)
            pages.append(Page(rule.id, "rule", why))
    told = already_told | {rule.id for rule in matched}

    if incident.open:
        for rule in rules:
            after = rule.extended_outage_after
            if after is not None and rule.id not in told and now - incident.declared_at >= after:
                pages.append(Page(rule.id, "extended_outage", f"open longer than {_human(after)}"))

    steps = min(escalation_steps_due(incident, now, interval), max_steps)
    if steps:
        base = max((rule.level for rule in matched), default=0)
        ladder = sorted({rule.level for rule in rules if rule.in_chain and rule.level > base})
        reached: set[int] = {rule.id for rule in matched}
        for step in range(1, steps + 1):
            late = f"not acknowledged {_human(incident.response_deadline - incident.declared_at)}"
            if step <= len(ladder):
                level = ladder[step - 1]
                targets = [r for r in rules if r.in_chain and r.level == level]
                why = f"{late} after declaration: escalated to level {level}"
            else:
                targets = [r for r in rules if r.id in reached]
                why = f"{late} after declaration: still unacknowledged, paging again"
            for rule in targets:
                reached.add(rule.id)
                pages.append(Page(rule.id, f"escalation-{step}", why))
    return pages


def _human(delta: timedelta) -> str:
    return format_duration(delta)
