"""The seeded Responders group runs the runbook's resolution actions too
(`incidents.run_actions`): the step that recommends an action showed "recommended"
and no button to the very people working the incident. Seeding adds it to a new
database; this adds it to an existing one's Responders group (if there is one)."""

from django.db import migrations


def grant(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="Responders").first()
    permission = Permission.objects.filter(
        content_type__app_label="incidents", codename="run_actions"
    ).first()
    if group is not None and permission is not None:  # a fresh database: the seed does it
        group.permissions.add(permission)


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="Responders").first()
    permission = Permission.objects.filter(
        content_type__app_label="incidents", codename="run_actions"
    ).first()
    if group is not None and permission is not None:
        group.permissions.remove(permission)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("incidents", "0010_merge_timeline_seq"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
