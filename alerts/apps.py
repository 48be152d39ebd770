from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Alerts in: Alertmanager and Stripe webhooks declare or join incidents and start
    the category's diagnostics. Sits above `diagnostics` (it starts checks) and talks
    to `incidents` only through its services and timeline."""

    name = "alerts"
    default_auto_field = "django.db.models.BigAutoField"
