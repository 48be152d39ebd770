"""Celery tasks of alerts: thin, idempotent, keyed by primary key."""

from __future__ import annotations

from celery import shared_task

from . import payments


@shared_task(ignore_result=True)
def summarize_stripe_minute(row_id: int) -> bool:
    """Run twice, the second run finds the minute already summarised."""
    return payments.summarize(row_id)


@shared_task(ignore_result=True)
def summarize_stripe_due() -> int:
    return payments.summarize_due()


@shared_task(ignore_result=True)
def sweep_stripe_webhook_errors() -> int:
    """Stripe's recent events not delivered to every endpoint, onto payment incidents."""
    return payments.sweep_webhook_errors()
