"""Responses shared by the HTMX views of both apps."""

from __future__ import annotations

import re

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

# The id of the message slot next to the control that sent the request
# (templates/partials/msg_slot.html), sent by that control as `X-Message-Slot`.
SLOT_HEADER = "X-Message-Slot"
_SLOT_ID = re.compile(r"[a-z][a-z0-9_-]{0,80}")


def message_slot(request: HttpRequest) -> str:
    """The slot the requesting control named, if it is a plausible element id ("" if not)."""
    slot = request.headers.get(SLOT_HEADER, "")
    return slot if request.htmx and _SLOT_ID.fullmatch(slot) else ""


def notice(
    request: HttpRequest, text: str, *, level: str = "", items: list[str] | None = None
) -> dict[str, object]:
    """A message for the slot of the control just pressed, drawn by the partial that answers."""
    return {"slot": message_slot(request), "text": text, "level": level, "items": items or []}


def htmx_error(request: HttpRequest, error: str) -> HttpResponse:
    """An HTMX action's refusal (status 422), shown next to the control that was
    pressed (its message slot), else in the page's flash area."""
    response = render(request, "partials/flash.html", {"error": error}, status=422)
    slot = message_slot(request)
    response["HX-Retarget"] = f"#{slot}" if slot else "#flash"
    response["HX-Reswap"] = "innerHTML"
    return response
