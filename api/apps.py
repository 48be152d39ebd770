from django.apps import AppConfig


class ApiConfig(AppConfig):
    """The JSON API (django-ninja): reads through incidents.access, writes through the
    services, like the pages. At the top of the layers: nothing imports it."""

    name = "api"
    default_auto_field = "django.db.models.BigAutoField"
