"""A target's secret comes only from an allowed environment variable: one starting
with TARGET_SECRET_ENV_PREFIX or listed in TARGET_SECRET_ENV_ALLOW, never one of
LotoOps's own secrets, checked on save and again when a check runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from django.core.exceptions import ValidationError

from diagnostics import services
from diagnostics.models import CheckRun, RunbookStep, RunStatus, Target
from diagnostics.probes.base import get_probe
from diagnostics.seed import seed_runbooks
from diagnostics.tasks import run_check
from tests import factories
from tests.diagnostics.test_probes_http import HealthServer

pytestmark = pytest.mark.django_db
OWN_SECRETS = [
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "EMAIL_HOST_PASSWORD",
    "SLACK_BOT_TOKEN",
    "SLACK_WEBHOOK_URL",
    "NOTIFY_WEBHOOK_SECRET",
    "NOTIFY_WEBHOOK_URL",
    "STRIPE_WEBHOOK_SECRET",
]


@pytest.fixture
def collector() -> Iterator[HealthServer]:
    """The attacker's server: records every request it receives."""
    httpd = HealthServer()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield httpd
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def secret_key_in_env(monkeypatch, settings) -> str:
    settings.SECRET_KEY = "django-insecure-9b1f0c4e7a2d8f6b3e5c1a0d9f8e7b6a"
    monkeypatch.setenv("SECRET_KEY", settings.SECRET_KEY)
    return settings.SECRET_KEY


def _sent_authorizations(server: HealthServer) -> list[str | None]:
    return [seen["authorization"] for seen in server.seen]


def test_a_target_naming_secret_key_is_refused_in_admin(client, runbook, collector):
    client.force_login(factories.UserFactory(username="root", is_staff=True, is_superuser=True))
    response = client.post(
        "/admin/diagnostics/target/add/",
        {
            "name": "lotolink-api",
            "kind": "http",
            "url": f"{collector.base}/health",
            "secret_env": "SECRET_KEY",
            "options": "{}",
            "active": "on",
        },
    )
    assert response.status_code == 200
    assert b"SECRET_KEY is one of LotoOps&#x27;s own secrets" in response.content
    assert not Target.objects.exists()


@pytest.mark.parametrize("name", OWN_SECRETS)
def test_lotoops_own_secrets_are_refused_whatever_the_settings(settings, name):
    settings.TARGET_SECRET_ENV_PREFIX = ""
    settings.TARGET_SECRET_ENV_ALLOW = [name]
    target = Target(name="t", kind="http", url="http://127.0.0.1:1/", secret_env=name)
    with pytest.raises(ValidationError, match="one of LotoOps's own secrets"):
        target.full_clean()


def test_only_prefixed_or_listed_names_are_allowed(settings):
    settings.TARGET_SECRET_ENV_ALLOW = ["LOTOLINK_API_TOKEN"]

    def clean(name: str) -> None:
        Target(
            name=f"t-{name}", kind="http", url="http://127.0.0.1:1/", secret_env=name
        ).full_clean()

    clean("LOTOOPS_TARGET_API_TOKEN")
    clean("LOTOLINK_API_TOKEN")
    with pytest.raises(ValidationError, match="not an allowed target secret"):
        clean("HOME_TOKEN")
    with pytest.raises(ValidationError, match="An environment variable name"):
        clean("BAD NAME")


def test_a_target_forced_into_the_database_never_sends_secret_key(
    client, responder, collector, secret_key_in_env
):
    seed_runbooks()
    Target.objects.create(  # around the admin: no clean()
        name="lotolink-api", kind="http", url=f"{collector.base}/health", secret_env="SECRET_KEY"
    )
    incident = factories.declare(actor=responder, severity="P2")
    client.force_login(responder)
    refused = client.post(
        f"/incidents/{incident.pk}/steps/init.health/run/", HTTP_HX_REQUEST="true"
    )
    assert refused.status_code == 422
    assert b"SECRET_KEY is one of LotoOps&#x27;s own secrets" in refused.content
    assert not CheckRun.objects.exists()
    assert collector.seen == []


def test_a_target_edited_after_queueing_never_sends_secret_key(
    responder, collector, secret_key_in_env, monkeypatch
):
    seed_runbooks()
    monkeypatch.setenv("LOTOOPS_TARGET_API_TOKEN", "tok-1234567890")
    target = Target.objects.create(
        name="lotolink-api",
        kind="http",
        url=f"{collector.base}/health",
        secret_env="LOTOOPS_TARGET_API_TOKEN",
    )
    incident = factories.declare(actor=responder, severity="P2")
    (run,) = services.request_check(
        incident, RunbookStep.objects.get(key="init.health"), actor=responder
    )
    Target.objects.filter(pk=target.pk).update(secret_env="SECRET_KEY")
    assert run_check.apply(args=(run.pk,)).get() == "refused"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "SECRET_KEY is one of LotoOps's own secrets" in run.summary
    assert secret_key_in_env not in run.summary
    assert collector.seen == []


def test_the_probe_itself_gets_no_secret_from_a_forbidden_name(collector, secret_key_in_env):
    """The last line: whatever reaches a probe, `Target.secret()` gives it nothing."""
    target = Target(
        name="lotolink-api", kind="http", url=f"{collector.base}/health", secret_env="SECRET_KEY"
    )
    assert target.secret() == "" and target.url_with_secret() == target.url
    get_probe("http.health").build(target, {}, timeout=3).run()
    assert _sent_authorizations(collector) == [None]


def test_an_allowed_name_holding_an_own_secret_is_not_sent(
    collector, secret_key_in_env, monkeypatch
):
    monkeypatch.setenv("LOTOOPS_TARGET_API_TOKEN", secret_key_in_env)
    target = Target(
        name="lotolink-api",
        kind="http",
        url=f"{collector.base}/health",
        secret_env="LOTOOPS_TARGET_API_TOKEN",
    )
    assert "holds one of LotoOps's own secrets" in target.secret_refusal()
    get_probe("http.health").build(target, {}, timeout=3).run()
    assert _sent_authorizations(collector) == [None]


def test_an_allowed_secret_is_sent(collector, monkeypatch):
    monkeypatch.setenv("LOTOOPS_TARGET_API_TOKEN", "tok-1234567890")
    target = Target(
        name="lotolink-api",
        kind="http",
        url=f"{collector.base}/health",
        secret_env="LOTOOPS_TARGET_API_TOKEN",
    )
    get_probe("http.health").build(target, {}, timeout=3).run()
    assert _sent_authorizations(collector) == ["Bearer tok-1234567890"]


@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "METRICS_TOKEN", "HOME"])
def test_a_probe_parameter_cannot_name_a_variable_outside_the_allow_list(name, monkeypatch):
    """Probes that read a variable a step or target option names (the banca's HMAC
    secret, the Stripe webhook secret, a cluster token) go through the same rule."""
    from diagnostics.probes.base import ProbeError
    from diagnostics.probes.secrets import read_secret_env

    monkeypatch.setenv(name, "would-leak-0123456789")
    with pytest.raises(ProbeError, match="webhook_secret_env"):
        read_secret_env(name, "webhook_secret_env")
    monkeypatch.setenv("LOTOOPS_TARGET_WHSEC", "whsec_ok")
    assert read_secret_env("LOTOOPS_TARGET_WHSEC", "webhook_secret_env") == "whsec_ok"
