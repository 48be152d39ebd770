"""Which environment variables a target, or a probe's parameter, may name.

A secret read from the environment is sent to a server whoever edits the target
or the step chooses: only variables matching TARGET_SECRET_ENV_PREFIX or listed
in TARGET_SECRET_ENV_ALLOW may be named, and LotoOps's own secrets never."""

from __future__ import annotations

import os
import re

from django.conf import settings

from .base import ProbeError

# LotoOps's own secrets and configuration: a target may never name them, whatever
# TARGET_SECRET_ENV_PREFIX and TARGET_SECRET_ENV_ALLOW say (a target's secret is
# sent to the target's URL, which whoever edits the target chooses).
FORBIDDEN_SECRET_ENV = frozenset(
    {
        "SECRET_KEY",
        "DJANGO_SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
        "EMAIL_HOST_USER",
        "EMAIL_HOST_PASSWORD",
        "SLACK_BOT_TOKEN",
        "SLACK_WEBHOOK_URL",
        "SLACK_SIGNING_SECRET",
        "NOTIFY_WEBHOOK_SECRET",
        "NOTIFY_WEBHOOK_URL",
        "POSTGRES_PASSWORD",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGSERVICEFILE",
        "METRICS_TOKEN",
        "STRIPE_WEBHOOK_SECRET",
    }
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def secret_env_refusal(name: str) -> str:
    """Why a target may not name this environment variable ("" when it may)."""
    if not name:
        return ""
    prefix = settings.TARGET_SECRET_ENV_PREFIX
    if not _ENV_NAME.fullmatch(name):
        return f"An environment variable name, like {prefix or 'LOTOOPS_TARGET_'}DB_PASSWORD."
    if name.upper() in FORBIDDEN_SECRET_ENV:
        return f"{name} is one of LotoOps's own secrets: a target may never name it."
    if (prefix and name.startswith(prefix)) or name in settings.TARGET_SECRET_ENV_ALLOW:
        return ""
    where = f"starting with {prefix}" if prefix else "listed"
    return (
        f"{name} is not an allowed target secret: name a variable {where} "
        "(TARGET_SECRET_ENV_PREFIX, TARGET_SECRET_ENV_ALLOW)."
    )


def read_secret_env(name: str, what: str) -> str:
    """The value of an environment variable a probe's parameter names (`what` says
    which parameter), refused with a clear ProbeError when it may not be named."""
    if refusal := secret_env_refusal(name):
        raise ProbeError(f"{what}: {refusal}")
    return os.environ.get(name, "")
