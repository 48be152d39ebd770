from django.urls import path

from . import views

app_name = "alerts"
urlpatterns = [
    path("alertmanager/", views.alertmanager_webhook, name="alertmanager"),
    path("stripe/", views.stripe_webhook, name="stripe"),
]
