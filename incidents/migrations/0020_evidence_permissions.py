"""Evidence files (database dumps, log exports) need their own permissions:
`incidents.download_evidence` and `incidents.verify_evidence`, no longer whoever
may see the incident. Seeding gives a new database's groups their defaults; this
gives an existing install's the same: both to Incident commanders and Responders,
verify to Managers (if those groups exist). The permissions are created here
(get_or_create) because Django creates a model's new permissions only after the
last migration has run."""

from django.db import migrations

NAMES = {
    "download_evidence": "Can download an incident's evidence files",
    "verify_evidence": "Can verify an incident's evidence files",
}
GRANTS = {
    "Incident commanders": ["download_evidence", "verify_evidence"],
    "Responders": ["download_evidence", "verify_evidence"],
    "Managers": ["verify_evidence"],
}


def grant(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    groups = {group.name: group for group in Group.objects.filter(name__in=GRANTS)}
    if not groups:  # a fresh database: the seed does it
        return
    incident_type, _ = ContentType.objects.get_or_create(app_label="incidents", model="incident")
    permissions = {
        codename: Permission.objects.get_or_create(
            content_type=incident_type, codename=codename, defaults={"name": name}
        )[0]
        for codename, name in NAMES.items()
    }
    for name, group in groups.items():
        group.permissions.add(*(permissions[codename] for codename in GRANTS[name]))


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permissions = Permission.objects.filter(
        content_type__app_label="incidents", codename__in=list(NAMES)
    )
    for group in Group.objects.filter(name__in=GRANTS):
        group.permissions.remove(*permissions)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("incidents", "0019_notification_withheld"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="incident",
            options={
                "ordering": ["-declared_at"],
                "permissions": [
                    ("view_restricted_incident", "Can view every restricted incident"),
                    ("run_actions", "Can run runbook resolution actions"),
                    ("approve_actions", "Can approve resolution actions"),
                    (
                        "override_recovery",
                        "Can resolve an incident whose recovery checks have not passed "
                        "(with a reason)",
                    ),
                    ("download_evidence", "Can download an incident's evidence files"),
                    ("verify_evidence", "Can verify an incident's evidence files"),
                ],
            },
        ),
        migrations.RunPython(grant, revoke),
    ]
