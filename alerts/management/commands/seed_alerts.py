from typing import Any

from django.core.management.base import BaseCommand

from alerts.seed import seed_alerts


class Command(BaseCommand):
    help = "Seed the default alert rules and automatic diagnostics (idempotent)."

    def handle(self, *args: Any, **options: Any) -> None:
        created = seed_alerts()
        summary = ", ".join(f"{n} {kind}" for kind, n in created.items())
        self.stdout.write(f"Alert rules seeded: created {summary}.")
