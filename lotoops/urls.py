from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from . import health, metrics

handler500 = "lotoops.errors.server_error"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("hooks/", include("alerts.urls")),
    path("api/v1/", include(("api.urls", "api"), namespace="api")),
    path("incidents/<int:pk>/", include("diagnostics.urls")),
    path("", include("incidents.urls")),
]
