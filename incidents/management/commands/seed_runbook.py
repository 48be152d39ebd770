from typing import Any

from django.core.management.base import BaseCommand

from incidents.seed import seed_runbook


class Command(BaseCommand):
    help = "Seed severities, escalation contacts, checklists and the Responders group (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = seed_runbook()
        summary = ", ".join(f"{n} {kind}" for kind, n in created.items())
        self.stdout.write(f"Runbook data seeded: created {summary}.")
