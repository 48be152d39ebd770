"""The webhook endpoints. Each answers 2xx only once its transaction has committed,
never 5xx after committing (a retry would then be right to come, and is harmless),
and 4xx with nothing written for what a retry cannot fix (a payload we cannot store
for a reason of its own: 400). 503 only when the database could not take it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.db import DatabaseError, DataError, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import alertmanager, payments, services, tokens
from .models import Source
from .routing import UnknownAlert

log = logging.getLogger(__name__)

# Alertmanager's groups are small; 1 MB is about 2,000 alerts with their labels.
MAX_BODY = 1024 * 1024


def refuse(status: int, error: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": error}, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def read_body(request: HttpRequest, limit: int = MAX_BODY) -> bytes | None:
    """The body, or None when it is larger than `limit` (declared or actual)."""
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    body = request.read(limit + 1)
    return None if len(body) > limit else body


def after_commit(work: Callable[[], object]) -> tuple[bool, object]:
    """Run `work` (which opens its own transaction) and report whether it committed:
    the first on-commit hook marks the commit, so a later hook that fails (the broker
    is down) cannot turn a committed delivery into a 5xx."""
    committed = {"yes": False}
    result: object = None
    try:
        with transaction.atomic():
            transaction.on_commit(lambda: committed.update(yes=True))
            result = work()
    except Exception:
        if not committed["yes"]:
            raise
        log.exception("an on-commit hook failed after the delivery committed")
    return committed["yes"], result


@login_not_required  # the bearer token is the authentication
@csrf_exempt
@require_POST
def alertmanager_webhook(request: HttpRequest) -> JsonResponse:
    token = tokens.authenticate(request.headers.get("Authorization", ""), Source.ALERTMANAGER)
    if token is None:
        return refuse(
            401, "A valid, unrevoked bearer token is required.", **{"WWW-Authenticate": "Bearer"}
        )
    body = read_body(request)
    if body is None:
        return refuse(413, f"The payload is larger than {MAX_BODY} bytes.")
    try:
        payload = alertmanager.parse(body)
        routes = services.route_all(payload)
    except alertmanager.PayloadError as exc:
        return refuse(400, str(exc))
    except UnknownAlert as exc:
        return refuse(422, str(exc))
    try:
        _, outcome = after_commit(lambda: services.ingest(payload, token=token, routes=routes))
    except DataError:
        # A value the checks in alertmanager.parse missed: the payload's own fault,
        # rolled back whole; a retry would fail the same way.
        log.exception("alert delivery refused by the database")
        return refuse(400, "The delivery holds a value that cannot be stored.")
    except DatabaseError:
        log.exception("alert delivery not stored")
        return refuse(503, "The delivery could not be stored; send it again.")
    assert isinstance(outcome, services.Outcome)
    return JsonResponse(outcome.as_json(), status=200)


# Stripe's events are a few kilobytes.
MAX_STRIPE_BODY = 256 * 1024


@login_not_required  # the signature is the authentication
@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> JsonResponse:
    body = read_body(request, MAX_STRIPE_BODY)
    if body is None:
        return refuse(413, f"The payload is larger than {MAX_STRIPE_BODY} bytes.")
    try:
        event = payments.verify(
            body, request.headers.get("Stripe-Signature", ""), settings.STRIPE_WEBHOOK_SECRET
        )
    except (payments.SignatureError, payments.EventError) as exc:
        return refuse(400, str(exc))
    try:
        _, outcome = after_commit(lambda: payments.ingest_event(event))
    except DataError:
        log.exception("Stripe event refused by the database")
        return refuse(400, "The event holds a value that cannot be stored.")
    except DatabaseError:
        log.exception("Stripe event not stored")
        return refuse(503, "The event could not be stored; send it again.")
    assert isinstance(outcome, payments.StripeOutcome)
    return JsonResponse(outcome.as_json(), status=200)
