from django.apps import AppConfig


class IncidentsConfig(AppConfig):
    name = "incidents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Side effects listen to the incident's signals (incidents/signals.py).
        from .paging import receivers as paging_receivers  # noqa: F401
        from .paging import regulatory  # noqa: F401  (starts and stops the clocks)
        from .postincident import receivers as postincident_receivers  # noqa: F401
