from django.apps import AppConfig


class DiagnosticsConfig(AppConfig):
    name = "diagnostics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from incidents import panels

        # Probe modules are imported explicitly: a missing one fails start-up.
        from . import (
            probes,  # noqa: F401
            verification,  # noqa: F401  (listens to check_finished)
        )
        from .impact import MONEY_PANEL
        from .views import RUNBOOK_PANEL

        # The incident page shows the runbook and the money at risk without
        # incidents importing diagnostics.
        panels.register(RUNBOOK_PANEL)
        panels.register(MONEY_PANEL)
