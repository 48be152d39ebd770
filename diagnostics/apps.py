from django.apps import AppConfig


class DiagnosticsConfig(AppConfig):
    name = "diagnostics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from incidents import panels

        # Probe modules are imported explicitly: a missing one fails start-up.
        from . import (
            probes,  # noqa: F401
            recovery,  # noqa: F401  (holds resolutions back, judges recovery rounds)
            verification,  # noqa: F401  (listens to check_finished)
        )
        from .impact import MONEY_PANEL
        from .views import RECOVERY_PANEL, RUNBOOK_PANEL

        # The incident page shows the runbook, the recovery and the money at risk
        # without incidents importing diagnostics.
        panels.register(RECOVERY_PANEL)
        panels.register(RUNBOOK_PANEL)
        panels.register(MONEY_PANEL)
