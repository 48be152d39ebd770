"""The viewer's profile: the time zone every time on the pages is shown in."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .. import forms, services
from ..models import UserProfile


@require_http_methods(["GET", "POST"])
def profile(request: HttpRequest) -> HttpResponse:
    current = (
        UserProfile.objects.filter(user=request.user).values_list("time_zone", flat=True).first()
    )
    form = forms.ProfileForm(request.POST or None, initial={"time_zone": current or ""})
    if request.method == "POST" and form.is_valid():
        zone = form.cleaned_data["time_zone"]
        services.set_time_zone(request.user, zone)
        shown = zone or f"the site's time zone ({UserProfile.zone_of(None)})"
        messages.success(request, f"Times are now shown in {shown}.")
        return redirect("incidents:profile")
    context = {"form": form, "zone": UserProfile.zone_of(request.user)}
    return render(request, "incidents/profile.html", context, status=422 if form.errors else 200)
