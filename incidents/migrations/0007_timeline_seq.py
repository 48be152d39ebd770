"""TimelineEvent.seq: the per-incident sequence number the live timeline orders and
resumes by. Existing events are numbered 1, 2, 3, ... per incident in id order."""

from django.db import migrations, models

# One statement on both PostgreSQL and SQLite (>= 3.33: UPDATE ... FROM, window functions).
NUMBER_EXISTING = """
UPDATE incidents_timelineevent
SET seq = numbered.n
FROM (
    SELECT id, ROW_NUMBER() OVER (PARTITION BY incident_id ORDER BY id) AS n
    FROM incidents_timelineevent
) AS numbered
WHERE incidents_timelineevent.id = numbered.id
"""


class Migration(migrations.Migration):
    dependencies = [
        ("incidents", "0006_checklist_open_due"),
    ]

    operations = [
        migrations.AddField(
            model_name="timelineevent",
            name="seq",
            field=models.PositiveIntegerField(editable=False, null=True),
        ),
        migrations.RunSQL(NUMBER_EXISTING, migrations.RunSQL.noop),
        migrations.AlterField(
            model_name="timelineevent",
            name="seq",
            field=models.PositiveIntegerField(editable=False),
        ),
        migrations.AddConstraint(
            model_name="timelineevent",
            constraint=models.UniqueConstraint(
                fields=("incident", "seq"), name="timeline_incident_seq"
            ),
        ),
    ]
