"""Step titles name their parameters ({min_seconds}) so a title follows its
threshold; the seeded titles that spelled the default out are rewritten (an
admin's own title is left alone)."""

from django.db import migrations, models

SEEDED = {
    "db.slow_queries": ("Queries running over 5 min", "Queries running over {min_seconds}"),
    "api.kill_idle_connections": (
        "Terminate idle connections older than 30 min",
        "Terminate idle connections older than {idle_minutes}",
    ),
}


def forward(apps, schema_editor):
    RunbookStep = apps.get_model("diagnostics", "RunbookStep")
    for key, (old, new) in SEEDED.items():
        RunbookStep.objects.filter(key=key, title=old).update(title=new)


def backward(apps, schema_editor):
    RunbookStep = apps.get_model("diagnostics", "RunbookStep")
    for key, (old, new) in SEEDED.items():
        RunbookStep.objects.filter(key=key, title=new).update(title=old)


class Migration(migrations.Migration):
    dependencies = [("diagnostics", "0004_action_approvals")]

    operations = [
        migrations.AlterField(
            model_name="runbookstep",
            name="title",
            field=models.CharField(
                help_text="May name a parameter in braces, e.g. “Queries running over "
                "{min_seconds}”: the page shows its value (5 min), so the title follows the "
                "parameter",
                max_length=200,
            ),
        ),
        migrations.RunPython(forward, backward),
    ]
