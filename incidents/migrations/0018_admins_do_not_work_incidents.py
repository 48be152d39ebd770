"""Separation of duties: the seeded Admins group maintains configuration and works no
incident. Earlier seeds gave it `change_incident`, `change_actionitem` and
`add_timelineevent` (acknowledge, resolve, post status updates, run checks, verify
action items, all from the API or Django admin). Seeding now leaves them out and
takes them away (incidents/seed.py, ADMINS_NEVER); this takes them, and anything else
that works an incident or sees every restricted one, away from an existing install's
Admins group. The list is frozen here as it stood when written."""

from django.db import migrations

WORKING = {
    "incidents": [
        *(
            f"{action}_{model}"
            for model in (
                "incident",
                "actionitem",
                "postmortem",
                "timelineevent",
                "checklistitem",
                "notification",
                "evidencefile",
                "regulatoryclock",
                "impactsample",
            )
            for action in ("add", "change", "delete")
        ),
        "run_actions",
        "approve_actions",
        "override_recovery",
        "view_restricted_incident",
    ],
    "diagnostics": [
        *(
            f"{action}_{model}"
            for model in (
                "checkrun",
                "actionconfirmation",
                "actionapproval",
                "recoveryverification",
            )
            for action in ("add", "change", "delete")
        ),
        "approve_actions",
    ],
}


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="Admins").first()
    if group is None:  # a fresh database: the seed makes the group without them
        return
    for app_label, codenames in WORKING.items():
        group.permissions.remove(
            *Permission.objects.filter(
                content_type__app_label=app_label, codename__in=codenames
            )
        )


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("diagnostics", "0001_initial"),
        ("incidents", "0017_impact_sample_at_resolution"),
    ]

    # Not reversible into the old grant: nobody should want it back by accident.
    operations = [migrations.RunPython(revoke, migrations.RunPython.noop)]
