"""Shared set-up for escalation tests: real addresses on the seeded contacts and a rota."""

from __future__ import annotations

from datetime import date, time

from incidents.models import EscalationContact, EscalationRole, Rotation, RotationMember

ADDRESSES = {
    EscalationRole.TECH_LEAD: ("Tess Lead", "tess@lotolink.test", "UTESS"),
    EscalationRole.ENGINEERING_MANAGER: ("Manu Manager", "manu@lotolink.test", "UMANU"),
    EscalationRole.CTO: ("Cleo CTO", "cleo@lotolink.test", "UCLEO"),
    EscalationRole.LEGAL: ("Lex Legal", "lex@lotolink.test", ""),
}


def give_contacts_addresses() -> dict[str, EscalationContact]:
    contacts = {}
    for contact in EscalationContact.objects.all():
        if contact.role in ADDRESSES:
            contact.name, contact.email, contact.slack_handle = ADDRESSES[contact.role]
            contact.save()
        contacts[contact.role] = contact
    return contacts


def weekly_rota() -> Rotation:
    """Olga, then Omar, handing over on Mondays at 09:00 in Santo Domingo (13:00 UTC)."""
    rotation = Rotation.objects.create(
        name="Platform on-call",
        time_zone="America/Santo_Domingo",
        start_date=date(2026, 2, 23),
        handoff_time=time(9),
        shift_days=7,
    )
    RotationMember.objects.create(
        rotation=rotation, position=0, name="Olga", email="olga@lotolink.test", slack_handle="UOLGA"
    )
    RotationMember.objects.create(
        rotation=rotation, position=1, name="Omar", email="omar@lotolink.test", slack_handle="UOMAR"
    )
    return rotation
