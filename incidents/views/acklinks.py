"""The acknowledge link carried by every page."""

from __future__ import annotations

from django.contrib import messages
from django.core import signing
from django.http import (
    HttpRequest,
    HttpResponse,
)
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .. import services
from ..access import can_view, get_incident_for
from ..models import Incident
from ..paging import acklinks


@require_http_methods(["GET", "POST"])
def ack_link(request: HttpRequest, token: str) -> HttpResponse:
    """The acknowledge link of a notification: GET shows what it acknowledges, POST
    acknowledges as the logged-in user. Forged or expired: a clear page, no change."""
    try:
        incident_id, _ = acklinks.read_ack_token(token)
    except signing.SignatureExpired:
        ids = acklinks.expired_token_ids(token)
        incident = Incident.objects.filter(pk=ids[0]).first() if ids else None
        if ids and incident and can_view(request.user, incident):
            acklinks.record_expired_link(ids[0], request.user, notification_id=ids[1])
        context = {"problem": "This acknowledge link has expired. Open the incident instead."}
        return render(request, "incidents/ack_link.html", context, status=410)
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        context = {"problem": "This acknowledge link is not valid: nothing was acknowledged."}
        return render(request, "incidents/ack_link.html", context, status=400)
    incident = get_incident_for(request.user, incident_id, work=True)
    if request.method == "POST":
        try:
            services.acknowledge_incident(incident, actor=request.user)
            messages.success(request, f"You acknowledged incident #{incident.pk}.")
        except services.IncidentError as exc:
            messages.info(request, str(exc))
        return redirect(incident)
    return render(request, "incidents/ack_link.html", {"incident": incident, "token": token})
