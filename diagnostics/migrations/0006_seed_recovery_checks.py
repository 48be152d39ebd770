"""Existing installs: the seeded payments and backend procedures get their recovery
checks (new installs get them from lotolink.toml when seeded). Only procedures that
still have their seeded key and name no checks are touched, and only steps that exist."""

from django.db import migrations

RECOVERY_CHECKS = {
    "payments": ["pay.pending_plays", "pay.webhook_status", "pay.queues"],
    "api": ["api.pods", "init.error_rate"],
}


def forwards(apps, schema_editor):
    Runbook = apps.get_model("diagnostics", "Runbook")
    RunbookStep = apps.get_model("diagnostics", "RunbookStep")
    for key, checks in RECOVERY_CHECKS.items():
        book = Runbook.objects.filter(key=key).first()
        if book is None or book.recovery_checks:
            continue
        found = set(
            RunbookStep.objects.filter(key__in=checks, kind="diagnostic").values_list(
                "key", flat=True
            )
        )
        book.recovery_checks = [c for c in checks if c in found]
        book.save(update_fields=["recovery_checks"])


class Migration(migrations.Migration):
    dependencies = [("diagnostics", "0005_recovery_checks_and_verification")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
