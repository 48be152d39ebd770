"""factory_boy factories; incidents are made through the declare service."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model

from incidents import services
from incidents.models import Category, Incident, Severity

User = get_user_model()
PASSWORD = "correct horse battery staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@lotolink.test")
    password = factory.django.Password(PASSWORD)


def declare(*, actor: Any, severity: str = "P1", **kwargs: Any) -> Incident:
    """An incident declared through the service (checklists, deadline, timeline)."""
    defaults: dict[str, Any] = {
        "title": "Payment webhooks failing",
        "category": Category.PAYMENT,
        "impacted_services": ["lotolink-backend", "stripe"],
        "affected_users": 120,
    }
    defaults.update(kwargs)
    return services.declare_incident(
        severity=Severity.objects.get(key=severity), actor=actor, **defaults
    )
