from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.core import checks
from django.utils import timezone

from .rules import sessions


class IncidentsConfig(AppConfig):
    name = "incidents"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Side effects listen to the incident's signals (incidents/signals.py).
        from .paging import receivers as paging_receivers  # noqa: F401
        from .paging import regulatory  # noqa: F401  (starts and stops the clocks)
        from .postincident import receivers as postincident_receivers  # noqa: F401

        checks.register(pdf_cjk_font)
        user_logged_in.connect(_stamp_session, dispatch_uid="lotoops-session-stamp")


def _stamp_session(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """A session's age and idle clocks start at sign-in (incidents/rules/sessions.py)."""
    session = getattr(request, "session", None)
    if session is not None:
        sessions.stamp_sign_in(session, timezone.now().timestamp())


def pdf_cjk_font(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The PDF exports print Chinese, Japanese and Korean with Noto Sans CJK
    (incidents/reporting/pdfdoc.py): say so at start-up when it is not installed."""
    if Path(settings.PDF_CJK_FONT).is_file():
        return []
    return [
        checks.Warning(
            f"The PDF exports' font for Chinese, Japanese and Korean, {settings.PDF_CJK_FONT}, "
            "is missing: such characters print as their code point ([U+4E2D]).",
            hint="Install Debian's fonts-noto-cjk, or set PDF_CJK_FONT to a font file "
            "that covers them.",
            id="incidents.W001",
        )
    ]
