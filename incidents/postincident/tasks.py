"""Celery tasks of post-incident work."""

from __future__ import annotations

from celery import shared_task

from .followups import send_due_reminders


@shared_task(ignore_result=True)
def send_checklist_reminders() -> int:
    """Beat, every minute: remind each due post-incident checklist item once (the
    claim on `reminded_at` makes overlapping or repeated runs harmless); the
    messages go through the paging outbox."""
    return len(send_due_reminders())
