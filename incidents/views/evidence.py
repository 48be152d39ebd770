"""Evidence on the incident page: download a stored file (audited on the timeline)
and verify the hashes of the incident's files. Both need the incident in view (404
otherwise) and their own permission on top (`incidents.download_evidence`,
`incidents.verify_evidence`; 403 without, and nothing goes on the timeline)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from .. import evidence
from ..access import can_download_evidence, can_verify_evidence, get_incident_for
from ..models import EvidenceFile


@require_GET
def download(request: HttpRequest, pk: int, file_pk: int) -> HttpResponse:
    incident = get_incident_for(request.user, pk)
    if not can_download_evidence(request.user, incident):
        raise PermissionDenied("You may not download this incident's evidence.")
    file = get_object_or_404(EvidenceFile, pk=file_pk, incident=incident)
    try:
        handle = open(evidence.absolute_path(file), "rb")  # noqa: SIM115  (FileResponse closes it)
    except (evidence.EvidenceError, OSError):
        raise Http404("This evidence file is missing from the store: run Verify.") from None
    evidence.record_download(file, actor=request.user)
    response = FileResponse(
        handle, as_attachment=True, filename=file.name, content_type=file.content_type
    )
    response["X-Content-SHA256"] = file.sha256
    return response


@require_POST
def verify(request: HttpRequest, pk: int) -> HttpResponse:
    incident = get_incident_for(request.user, pk)
    if not can_verify_evidence(request.user, incident):
        raise PermissionDenied("You may not verify this incident's evidence.")
    checks = evidence.verify(incident)
    evidence.record_verification(incident, checks, actor=request.user)
    if request.headers.get("HX-Request"):
        context = {
            "incident": incident,
            "evidence_checks": checks,
            "evidence_failed": [c.file.name for c in checks if not c.ok],
            "verified": True,
            "can_download_evidence": can_download_evidence(request.user, incident),
            "can_verify_evidence": True,
        }
        return render(request, "incidents/partials/evidence.html", context)
    bad = [c.reason for c in checks if not c.ok]
    if bad:
        messages.error(request, "Evidence verification failed: " + "; ".join(bad))
    else:
        messages.success(request, f"Evidence verified: {len(checks)} of {len(checks)} intact.")
    return redirect(incident)
