"""The runbook's data (severity table, escalation contacts, checklists) and the
idempotent seeding of it. Re-running never duplicates and never overwrites what
an admin has edited since: rows are created when missing, matched by key."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import Group, Permission
from django.db import transaction

from .models import (
    Category,
    ChecklistPhase,
    ChecklistTemplate,
    ChecklistTemplateItem,
    EscalationContact,
    EscalationRole,
    Severity,
)

SEVERITIES = [
    (
        "P0",
        "Critical",
        "Complete service outage, data loss, security breach",
        timedelta(minutes=15),
        "Payment processing down, data breach",
    ),
    (
        "P1",
        "High",
        "Major functionality degraded, affecting many users",
        timedelta(minutes=30),
        "Webhook failures > 50%, slow response times",
    ),
    (
        "P2",
        "Medium",
        "Minor functionality impacted, workaround available",
        timedelta(hours=2),
        "Single banca integration down, minor errors",
    ),
    (
        "P3",
        "Low",
        "Cosmetic issues, planned maintenance",
        timedelta(hours=24),
        "UI bugs, non-critical logging issues",
    ),
]

# role, level, when to escalate (the runbook's words), always, severities,
# categories, flags, extended outage after
CONTACTS = [
    (EscalationRole.ON_CALL, 1, "First response", True, [], [], [], None),
    (EscalationRole.TECH_LEAD, 2, "P0/P1 incidents", False, ["P0", "P1"], [], [], None),
    (
        EscalationRole.ENGINEERING_MANAGER,
        3,
        "P0 incidents, extended outages",
        False,
        ["P0"],
        [],
        [],
        timedelta(hours=2),
    ),
    (
        EscalationRole.CTO,
        4,
        "Major security incidents, data loss",
        False,
        [],
        [Category.SECURITY],
        ["security", "data_loss"],
        None,
    ),
    (
        EscalationRole.LEGAL,
        4,
        "Data breaches, regulatory issues",
        False,
        [],
        [],
        ["data_breach", "regulatory"],
        None,
    ),
]

CHECKLISTS = [
    (
        ChecklistPhase.INITIAL,
        "Acknowledge the incident",
        None,
        [
            "Check system health (API /health)",
            "Check key metrics: error rates, response times, queue depth, database connections",
        ],
    ),
    (
        ChecklistPhase.ASSESS,
        "Assess severity",
        None,
        [
            "Determine number of affected users",
            "Identify impacted services",
            "Check payment processing status",
            "Review recent deployments",
        ],
    ),
    (
        ChecklistPhase.COMMUNICATION,
        "Start incident communication",
        None,
        [
            "Create incident channel",
            "Post initial status update",
            "Notify relevant stakeholders",
        ],
    ),
    (
        ChecklistPhase.POST_24H,
        "Immediate (within 24 hours)",
        timedelta(hours=24),
        [
            "Confirm service is stable",
            "Document timeline of events",
            "Collect all relevant logs and metrics",
            "Send initial incident report",
        ],
    ),
    (
        ChecklistPhase.POST_3D,
        "Within 3 days",
        timedelta(days=3),
        [
            "Complete root cause analysis (RCA)",
            "Identify preventive measures",
            "Create action items with owners",
        ],
    ),
    (
        ChecklistPhase.POST_1W,
        "Within 1 week",
        timedelta(weeks=1),
        [
            "Hold blameless post-mortem meeting",
            "Document lessons learned",
            "Update runbooks with new learnings",
            "Implement quick wins",
        ],
    ),
]

# Responders run the runbook's resolution actions too: the runbook recommends them
# from what a check found, and a responder at 3 a.m. must be able to act on it (P0/P1
# actions still wait for a second person's approval).
RESPONDER_PERMISSIONS = ["add_incident", "change_incident", "view_incident", "run_actions"]
# Evidence (database dumps, log exports) is taken and checked by those working the
# incident: they ran the snapshot and need it to investigate. Managers verify the
# chain of custody for their reports but take no copy of the data (players' rows);
# Viewers, Admins and users with no group get neither. Migration 0018 grants these
# on an install seeded before they existed.
EVIDENCE_PERMISSIONS = ["incidents.download_evidence", "incidents.verify_evidence"]


def _crud(
    app: str, *models: str, actions: tuple[str, ...] = ("add", "change", "delete", "view")
) -> list[str]:
    return [f"{app}.{action}_{model}" for model in models for action in actions]


# The roles, as groups with documented defaults (README, "Roles"). Seeding creates a
# missing group with these permissions and leaves an existing one as the admin left it
# (Responders only ever gains its four). Object permissions per incident (guardian:
# view, change, run actions) come on top; restricted incidents stay hidden from every
# role but to those granted them and holders of `view_restricted_incident`.
ROLES: dict[str, list[str]] = {
    # Reads the dashboard, incidents, post-mortems and action items; changes nothing.
    "Viewers": [
        "incidents.view_incident",
        "incidents.view_postmortem",
        "incidents.view_actionitem",
    ],
    # Declares and works incidents, runs diagnostics and the resolution actions.
    "Responders": [
        *(f"incidents.{codename}" for codename in RESPONDER_PERMISSIONS),
        *EVIDENCE_PERMISSIONS,
    ],
    # Leads the response: a responder who may also resolve an incident whose recovery
    # checks have not passed (with a reason).
    "Incident commanders": [
        *(f"incidents.{codename}" for codename in RESPONDER_PERMISSIONS),
        "incidents.override_recovery",
        *EVIDENCE_PERMISSIONS,
    ],
    # Reads everything (not restricted incidents), reports and exports, the audit
    # trail; verifies evidence (never downloads it).
    "Managers": [
        "incidents.view_incident",
        "incidents.view_postmortem",
        "incidents.view_actionitem",
        "incidents.view_auditentry",
        "incidents.verify_evidence",
    ],
    # Maintains the runbook's data in Django admin (give the users "staff status" too):
    # severities, contacts, rota, checklists, runbooks, steps, targets; reads the rest
    # and the audit trail. Works no incident (separation of duties, ADMINS_NEVER).
    # Granting access to an incident stays with superusers.
    "Admins": [
        *_crud(
            "incidents",
            "severity",
            "escalationcontact",
            "checklisttemplate",
            "checklisttemplateitem",
            "rotation",
            "rotationmember",
            "rotaoverride",
        ),
        *_crud("diagnostics", "target", "runbook", "runbookstep"),
        *_crud(
            "incidents",
            "incident",
            "actionitem",
            "timelineevent",
            "notification",
            "postmortem",
            "auditentry",
            "checklistitem",
            actions=("view",),
        ),
        *_crud(
            "diagnostics",
            "checkrun",
            "workerheartbeat",
            "recoveryverification",
            actions=("view",),
        ),
    ],
}


def _permissions(names: list[str]) -> list[Permission]:
    wanted = {tuple(name.split(".", 1)) for name in names}
    found = [
        p
        for p in Permission.objects.filter(
            codename__in=[codename for _, codename in wanted]
        ).select_related("content_type")
        if (p.content_type.app_label, p.codename) in wanted
    ]
    missing = wanted - {(p.content_type.app_label, p.codename) for p in found}
    if missing:
        raise LookupError(f"Unknown permissions: {sorted('.'.join(m) for m in missing)}")
    return found


@transaction.atomic
def seed_runbook() -> dict[str, int]:
    """Create what is missing; return how many rows of each kind were created."""
    created = {"severities": 0, "contacts": 0, "checklists": 0, "groups": 0}
    for order, (key, name, description, response, examples) in enumerate(SEVERITIES):
        _, made = Severity.objects.get_or_create(
            key=key,
            defaults={
                "name": name,
                "description": description,
                "response_time": response,
                "examples": examples,
                "order": order,
            },
        )
        created["severities"] += made
    by_key = {s.key: s for s in Severity.objects.all()}
    for role, level, when, always, severities, categories, flags, outage in CONTACTS:
        if EscalationContact.objects.filter(role=role).exists():
            continue
        contact = EscalationContact.objects.create(
            role=role,
            name=f"{role.label} (to be assigned)",
            level=level,
            when_to_escalate=when,
            always=always,
            categories=list(categories),
            flags=flags,
            extended_outage_after=outage,
            in_escalation_chain=role != EscalationRole.LEGAL,
        )
        contact.severities.set([by_key[k] for k in severities])
        created["contacts"] += 1
    for order, (phase, title, due, items) in enumerate(CHECKLISTS):
        template, made = ChecklistTemplate.objects.get_or_create(
            phase=phase, defaults={"title": title, "due_after": due, "order": order}
        )
        if made:
            ChecklistTemplateItem.objects.bulk_create(
                ChecklistTemplateItem(template=template, text=text, order=i)
                for i, text in enumerate(items)
            )
            created["checklists"] += 1
    for name, permissions in ROLES.items():
        group, made = Group.objects.get_or_create(name=name)
        created["groups"] += made
        if made:
            group.permissions.add(*_permissions(permissions))
        elif name == "Responders":
            group.permissions.add(
                *_permissions([f"incidents.{codename}" for codename in RESPONDER_PERMISSIONS])
            )
    remove_working_permissions_from_admins()
    return created


# Separation of duties: the Admins group maintains configuration and never works an
# incident (nor sees a restricted one), whatever an earlier seed or an admin gave it.
# An admin who also responds is given a responder role as well. Seeding (and the data
# migration 0018) takes these away from an existing Admins group: the one exception
# to "seeding never overwrites an edit".
ADMINS_NEVER: list[str] = [
    *_crud(
        "incidents",
        "incident",
        "actionitem",
        "postmortem",
        "timelineevent",
        "checklistitem",
        "notification",
        "evidencefile",
        "regulatoryclock",
        "impactsample",
        actions=("add", "change", "delete"),
    ),
    *_crud(
        "diagnostics",
        "checkrun",
        "actionconfirmation",
        "actionapproval",
        "recoveryverification",
        actions=("add", "change", "delete"),
    ),
    "incidents.run_actions",
    "incidents.approve_actions",
    "incidents.override_recovery",
    "incidents.view_restricted_incident",
    "incidents.download_evidence",
    "incidents.verify_evidence",
    "diagnostics.approve_actions",
]


def remove_working_permissions_from_admins() -> None:
    group = Group.objects.filter(name="Admins").first()
    if group is not None:
        group.permissions.remove(*_permissions(ADMINS_NEVER))
