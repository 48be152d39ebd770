"""Celery tasks of the incidents app: thin, idempotent."""

from __future__ import annotations

from celery import shared_task

from . import postmortem


@shared_task(ignore_result=True)
def send_checklist_reminders() -> int:
    """Beat, every minute: remind each due post-incident checklist item once (the
    claim on `reminded_at` makes overlapping or repeated runs harmless)."""
    return len(postmortem.send_due_reminders())
