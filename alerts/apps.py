from django.apps import AppConfig


class AlertsConfig(AppConfig):
    """Alerts in: Alertmanager and Stripe webhooks declare or join incidents and start
    the category's diagnostics. Sits above `diagnostics` (it starts checks) and talks
    to `incidents` only through its services and timeline."""

    name = "alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from incidents.models import Severity

        from .models import CategoryRule, SeverityRule
        from .routing import forget_rules

        for model in (SeverityRule, CategoryRule, Severity):
            post_save.connect(forget_rules, sender=model, dispatch_uid=f"rules-{model.__name__}")
            post_delete.connect(
                forget_rules, sender=model, dispatch_uid=f"rules-{model.__name__}-d"
            )
