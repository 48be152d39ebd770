"""The incident's domain signals. Services send them inside their transaction,
after the change and its timeline event; side effects listen (paging,
post-incident). A receiver that must be able to abort the change does its work
right away (it runs in the service's transaction); one that queues work does so
with `transaction.on_commit`. Every signal here has its listeners (tested).

Every signal is sent with `sender=Incident` and these keyword arguments:
"""

from __future__ import annotations

from django.dispatch import Signal

# incident, actor (or None), now. Paging tells whoever the rules name (on commit).
incident_declared = Signal()
# incident (locked), actor, now. Paging cancels pages not yet sent (in the transaction).
incident_acknowledged = Signal()
# incident (locked), actor, now. Post-incident starts its checklists and the
# post-mortem draft (in the transaction).
incident_resolved = Signal()
# incident (locked), actor, now, note. Sent by transition_incident before it resolves
# an incident, in its transaction. Recovery verification (diagnostics/recovery.py)
# listens: a receiver returns None to let the incident resolve now, returns a
# TimelineEvent to hold the resolution back (the event says why and what comes next;
# what the receiver wrote commits, the status does not change), or raises
# IncidentError to refuse (nothing is written).
resolution_requested = Signal()
# incident, actor, old (Severity), new (Severity). Paging re-evaluates who is told.
severity_changed = Signal()
# incident, actor, added (list[str]), removed (list[str]). Paging re-evaluates who is told.
flags_changed = Signal()
# incident, event (the status update's TimelineEvent). Paging fans it out (on commit).
status_update_posted = Signal()

ALL = (
    incident_declared,
    incident_acknowledged,
    incident_resolved,
    resolution_requested,
    severity_changed,
    flags_changed,
    status_update_posted,
)
