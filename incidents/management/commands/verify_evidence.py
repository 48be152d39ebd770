from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from incidents.evidence import record_verification, verify
from incidents.models import Incident


class Command(BaseCommand):
    help = (
        "Recompute the SHA-256 of every evidence file (or one incident's) and name any "
        "file that changed or is missing; exits non-zero if one did. Each incident "
        "checked gets the outcome on its timeline."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--incident", type=int, help="Only this incident's evidence (its id)")

    def handle(self, *args: Any, **options: Any) -> None:
        incident = None
        if options["incident"] is not None:
            incident = Incident.objects.filter(pk=options["incident"]).first()
            if incident is None:
                raise CommandError(f"No incident #{options['incident']}.")
        checks = verify(incident)
        for check in checks:
            mark = "ok  " if check.ok else "FAIL"
            self.stdout.write(f"{mark} #{check.file.incident_id} {check.reason}")
        by_incident: dict[int, Incident] = {c.file.incident_id: c.file.incident for c in checks}
        for item in by_incident.values():
            record_verification(item, checks, actor=None)
        bad = [c for c in checks if not c.ok]
        if bad:
            names = ", ".join(f"{c.file.name} (incident #{c.file.incident_id})" for c in bad)
            raise CommandError(f"{len(bad)} of {len(checks)} evidence files failed: {names}")
        self.stdout.write(f"{len(checks)} evidence files verified, all intact.")
