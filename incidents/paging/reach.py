"""Can anybody be reached? What the incident page and the dashboard warn about
when paging would look done while nothing leaves the machine: nobody on the
rota, contacts without an address, email printed to the console, no channel
that delivers at all."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..models import Incident, Notification, NotificationStatus, Status
from . import channels as notify
from .oncall import on_call

# A page in one of these states has reached (or may still reach) its person.
LIVE = (NotificationStatus.PENDING, NotificationStatus.SENDING, NotificationStatus.SENT)


@dataclass(frozen=True)
class Reach:
    """`problems`: sentences for people, worst first; `nobody`: no page of this
    incident has left or can still leave through a channel that delivers."""

    problems: list[str] = field(default_factory=list)
    nobody: bool = False
    no_address: list[str] = field(default_factory=list)
    withheld: list[str] = field(default_factory=list)


def setup_problems(*, rota_empty: bool | None = None) -> list[str]:
    """What is wrong whatever the incident: no rota member, email that stays here,
    no channel that delivers. `rota_empty`: when the caller already asked the rota."""
    problems = []
    delivering = notify.delivering_channels()
    if not delivering:
        problems.append(
            "No notification channel delivers: set EMAIL_HOST (SMTP), SLACK_BOT_TOKEN or "
            "NOTIFY_WEBHOOK_URL."
        )
    local = notify.EmailChannel.not_delivered()
    if local:
        problems.append(f"Email is {local}: set EMAIL_HOST so email pages leave this machine.")
    if rota_empty is None:
        rota_empty = on_call()[0] is None
    if rota_empty:
        problems.append(
            "Nobody is on the on-call rota right now: only the on-call contact's own "
            "address is paged (admin: Rotations)."
        )
    return problems


def for_incident(
    incident: Incident,
    pages: Iterable[Notification] | None = None,
    *,
    rota_empty: bool | None = None,
) -> Reach:
    """The warnings of the incident page's "Who's told" card. Nobody reached matters
    while the incident waits for its acknowledgement (someone who acknowledged is
    on it, however they heard)."""
    rows = [
        n
        for n in (pages if pages is not None else incident.notifications.all())
        if n.kind == Notification.PAGE
    ]
    delivering = set(notify.delivering_channels())
    by_person: dict[str, list[Notification]] = {}
    for row in rows:
        by_person.setdefault(row.recipient, []).append(row)
    no_address = sorted(
        who
        for who, items in by_person.items()
        if all(n.status == NotificationStatus.NO_ADDRESS for n in items)
    )
    withheld = sorted(
        who
        for who, items in by_person.items()
        if all(n.status == NotificationStatus.WITHHELD for n in items)
    )
    reached = any(n.status in LIVE and n.channel in delivering for n in rows)
    problems = []
    nobody = incident.status == Status.DECLARED and not reached
    if nobody:
        problems.append(
            "Nobody can be reached for this incident: no page has left or can leave "
            "through a channel that delivers."
            if rows
            else "Nobody has been paged for this incident yet."
        )
    if no_address:
        problems.append(f"No address to page: {', '.join(no_address)}.")
    if withheld:
        problems.append(
            f"Not told, as they may not see this restricted incident (paging grants no "
            f"access): {', '.join(withheld)}."
        )
    return Reach(problems + setup_problems(rota_empty=rota_empty), nobody, no_address, withheld)


def unreachable_incidents(incident_ids: Iterable[int]) -> set[int]:
    """Of these (declared, unacknowledged) incidents, those no page has reached or can
    still reach: one query."""
    ids = set(incident_ids)
    if not ids:
        return set()
    reached = set(
        Notification.objects.filter(
            incident_id__in=ids,
            kind=Notification.PAGE,
            status__in=LIVE,
            channel__in=notify.delivering_channels(),
        )
        .values_list("incident_id", flat=True)
        .distinct()
    )
    return ids - reached
