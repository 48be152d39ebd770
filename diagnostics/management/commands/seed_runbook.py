from typing import Any

from django.core.management.base import BaseCommand

from diagnostics.seed import seed_runbooks
from incidents.seed import seed_runbook


class Command(BaseCommand):
    help = "Seed severities, contacts, checklists, groups and the runbooks (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = seed_runbook() | seed_runbooks()
        summary = ", ".join(f"{n} {kind}" for kind, n in created.items())
        self.stdout.write(f"Runbook data seeded: created {summary}.")
