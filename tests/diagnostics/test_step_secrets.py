"""A secret named in a runbook step's parameters belongs to the addresses it was bound
for (issue 20, hole 2, step parameters): only superusers set or change a parameter
that names a secret or says where one is sent (banca.hmac_match's `kubernetes`,
stripe.retry_webhooks' `webhook_url` / `webhook_secret_env`); a step changed around
the admin is refused at Run and by the worker, and nothing is sent.

The peers are the recording servers of test_target_hardening on loopback, which the
suite allow-lists (tests/conftest.py): the address check is not what stops them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from diagnostics import services
from diagnostics.models import CheckRun, RunbookStep, RunStatus, Target
from diagnostics.seed import seed_runbooks
from diagnostics.tasks import run_check
from tests import factories
from tests.diagnostics import test_target_hardening as hardening
from tests.diagnostics.test_target_hardening import Peer
from tests.incidents.test_admin_choices import step_form

pytestmark = pytest.mark.django_db

# The recording peers and the two admins of the target tests, reused as they are.
peers, platform, listener = hardening.peers, hardening.platform, hardening.listener
admin1, root = hardening.admin1, hardening.root

K8S_TOKEN = "k8s-token-5f1e9d2c7b-never-sent-astray"
K8S_TOKEN_ENV = "LOTOOPS_TARGET_K8S_TOKEN"
HMAC_ENV = "LOTOOPS_TARGET_BANCA_HMAC_BANCA_NORTE"


@pytest.fixture
def secrets(monkeypatch) -> None:
    monkeypatch.setenv(K8S_TOKEN_ENV, K8S_TOKEN)
    monkeypatch.setenv(HMAC_ENV, "hmac-registered-with-the-banca")


@pytest.fixture
def hmac_step(runbook, platform: Peer, secrets) -> RunbookStep:
    """The seeded banca.hmac_match, its cluster on `platform` (as seeded by a superuser),
    and one banca target."""
    seed_runbooks()
    step = RunbookStep.objects.get(key="banca.hmac_match")
    step.params = {**step.params, "kubernetes": {"url": platform.base, "token_env": K8S_TOKEN_ENV}}
    step.save(rebind=True)
    Target.objects.create(name="banca-norte", kind="banca", url="https://banca-norte.example/")
    return step


def _repointed(step: RunbookStep, url: str) -> dict[str, Any]:
    return {**step.params, "kubernetes": {**step.params["kubernetes"], "url": url}}


def _request(step: RunbookStep, responder: Any) -> CheckRun:
    incident = factories.declare(actor=responder, severity="P2")
    (run,) = services.request_check(incident, step, actor=responder)
    return run


def _sent(peer: Peer) -> list[str | None]:
    return [seen["authorization"] for seen in peer.seen]


def test_an_admin_cannot_repoint_a_steps_secret_in_the_admin(
    client, admin1, hmac_step, platform, listener
):
    client.force_login(admin1)
    response = client.post(
        f"/admin/diagnostics/runbookstep/{hmac_step.pk}/change/",
        step_form(hmac_step, params=json.dumps(_repointed(hmac_step, listener.base))),
    )
    assert response.status_code == 200
    assert b"Only a superuser may set or change kubernetes" in response.content
    hmac_step.refresh_from_db()
    assert hmac_step.params["kubernetes"]["url"] == platform.base
    # Nor naming another variable for the token, nor adding a step that names one.
    other = {**hmac_step.params, "kubernetes": {"url": platform.base, "token_env": "LOTOOPS_X"}}
    response = client.post(
        f"/admin/diagnostics/runbookstep/{hmac_step.pk}/change/",
        step_form(hmac_step, params=json.dumps(other)),
    )
    assert b"Only a superuser may set or change kubernetes" in response.content
    # Everything else of the step is still theirs to edit.
    response = client.post(
        f"/admin/diagnostics/runbookstep/{hmac_step.pk}/change/",
        step_form(hmac_step, timeout_seconds=20),
    )
    assert response.status_code == 302
    hmac_step.refresh_from_db()
    assert hmac_step.timeout_seconds == 20
    assert hmac_step.secret_binding == {
        "secrets": {"kubernetes.token_env": K8S_TOKEN_ENV},
        "to": [platform.base],
    }


def test_an_admin_cannot_point_the_webhook_resend_elsewhere(client, admin1, listener):
    seed_runbooks()
    step = RunbookStep.objects.get(key="pay.retry_webhooks")
    client.force_login(admin1)
    seeded = dict(step.params)
    for params in (
        {"webhook_url": f"{listener.base}/hook"},
        {"webhook_url": f"{listener.base}/hook", "webhook_secret_env": "LOTOOPS_TARGET_WHSEC"},
    ):
        response = client.post(
            f"/admin/diagnostics/runbookstep/{step.pk}/change/",
            step_form(step, params=json.dumps({**seeded, **params})),
        )
        assert response.status_code == 200
        assert b"Only a superuser may set or change webhook_" in response.content
    step.refresh_from_db()
    assert step.params == seeded and step.secret_binding == {}


def test_a_step_changed_around_the_admin_sends_its_secret_nowhere(
    hmac_step, responder, platform, listener
):
    run = _request(hmac_step, responder)
    RunbookStep.objects.filter(pk=hmac_step.pk).update(params=_repointed(hmac_step, listener.base))
    run.params = RunbookStep.objects.get(pk=hmac_step.pk).params  # as queued after the change
    run.save(update_fields=["params"])
    outcome = run_check.apply(args=(run.pk,)).get()
    assert listener.seen == [] and platform.seen == []
    assert outcome == "refused"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert f"was bound for {platform.base} with {K8S_TOKEN_ENV}" in run.summary
    assert f"now points at {listener.base}" in run.summary
    assert "superuser binds the secret again" in run.summary
    assert K8S_TOKEN not in run.summary
    assert listener.seen == [] and platform.seen == []

    # Saved from a shell: the binding is cleared, Run says why, the worker too.
    step = RunbookStep.objects.get(pk=hmac_step.pk)
    step.save()
    assert step.secret_binding == {}
    with pytest.raises(services.CheckError, match="was bound for nothing"):
        _request(step, responder)
    assert listener.seen == []


def test_a_superuser_binds_it(client, root, hmac_step, responder, listener):
    client.force_login(root)
    response = client.post(
        f"/admin/diagnostics/runbookstep/{hmac_step.pk}/change/",
        step_form(hmac_step, params=json.dumps(_repointed(hmac_step, listener.base))),
    )
    assert response.status_code == 302
    hmac_step.refresh_from_db()
    assert hmac_step.secret_binding["to"] == [listener.base]
    run = _request(hmac_step, responder)
    run_check.apply(args=(run.pk,))
    assert _sent(listener) == [f"Bearer {K8S_TOKEN}"]
    run.refresh_from_db()
    assert K8S_TOKEN not in run.summary + run.output


def test_lotoops_own_secrets_are_never_named_by_a_step(hmac_step, responder, listener, settings):
    run = _request(hmac_step, responder)
    own = {**hmac_step.params, "kubernetes": {"url": listener.base, "token_env": "SECRET_KEY"}}
    hmac_step.params = own
    with pytest.raises(ValidationError, match="SECRET_KEY is one of LotoOps's own secrets"):
        hmac_step.full_clean()
    with pytest.raises(services.CheckError, match="SECRET_KEY is one of LotoOps's own secrets"):
        _request(hmac_step, responder)
    RunbookStep.objects.filter(pk=hmac_step.pk).update(params=own, secret_binding={})
    CheckRun.objects.filter(pk=run.pk).update(params=own)
    # Even bound by a superuser (saved around every check), the worker refuses it.
    hmac_step.save(rebind=True)
    assert run_check.apply(args=(run.pk,)).get() == "refused"
    run.refresh_from_db()
    assert "SECRET_KEY is one of LotoOps's own secrets" in run.summary
    assert listener.seen == []


def test_an_allowed_name_holding_our_own_secret_is_never_sent(
    hmac_step, responder, platform, settings, monkeypatch
):
    monkeypatch.setenv(K8S_TOKEN_ENV, settings.SECRET_KEY)
    with pytest.raises(services.CheckError, match="holds one of LotoOps's own secrets"):
        _request(hmac_step, responder)
    assert platform.seen == []


def test_a_step_url_at_a_forbidden_address_is_refused_on_save_and_at_run(
    hmac_step, responder, platform, settings
):
    run = _request(hmac_step, responder)
    settings.TARGET_ALLOWED_NETWORKS = []
    refused = r"kubernetes\.url refused: 127\.0\.0\.1 is a loopback"
    with pytest.raises(ValidationError, match=refused):
        hmac_step.full_clean()
    assert run_check.apply(args=(run.pk,)).get() == "refused"
    run.refresh_from_db()
    assert "127.0.0.1 is a loopback" in run.summary
    assert platform.seen == []


# --- a Stripe target's webhook options: the signing secret goes to its webhook_url ---------

WHSEC_ENV = "LOTOOPS_TARGET_STRIPE_WHSEC"


def _stripe_target(platform: Peer) -> Target:
    return Target.objects.create(
        name="lotolink-stripe",
        kind="stripe",
        url=platform.base,
        secret_env=hardening.TOKEN_ENV,
        options={"webhook_url": f"{platform.base}/hook", "webhook_secret_env": WHSEC_ENV},
    )


def test_an_admin_who_repoints_a_stripe_targets_webhook_clears_its_binding(
    client, admin1, platform, listener
):
    target = _stripe_target(platform)
    client.force_login(admin1)
    options = {**target.options, "webhook_url": f"{listener.base}/hook"}
    response = client.post(
        f"/admin/diagnostics/target/{target.pk}/change/",
        hardening._form(target, options=json.dumps(options)),
        follow=True,
    )
    assert b"its secret binding (LOTOOPS_TARGET_STRIPE_KEY, LOTOOPS_TARGET_STRIPE_WHSEC)" in (
        response.content
    )
    target.refresh_from_db()
    assert target.options == {"webhook_url": f"{listener.base}/hook"}
    assert target.secret_env == "" and target.secret_hosts == []


def test_a_stripe_webhook_repointed_around_the_admin_is_refused(responder, platform, listener):
    seed_runbooks()
    target = _stripe_target(platform)
    options = {**target.options, "webhook_url": f"{listener.base}/hook"}
    Target.objects.filter(pk=target.pk).update(options=options)
    incident = factories.declare(actor=responder, severity="P2")
    run = services.run_action(
        incident,
        RunbookStep.objects.get(key="pay.retry_webhooks"),
        actor=responder,
        target=Target.objects.get(pk=target.pk),
        params={"minutes": 60},
        plan="resend the failed events",
    )
    assert run_check.apply(args=(run.pk,)).get() == "refused"
    run.refresh_from_db()
    assert f"now points at {platform.base}, {listener.base}" in run.summary
    assert listener.seen == []


def test_a_stripe_target_may_not_name_our_own_webhook_secret(platform):
    target = Target(
        name="s",
        kind="stripe",
        url=platform.base,
        options={
            "webhook_url": f"{platform.base}/hook",
            "webhook_secret_env": "STRIPE_WEBHOOK_SECRET",
        },
    )
    with pytest.raises(
        ValidationError, match="webhook_secret_env: STRIPE_WEBHOOK_SECRET is one of"
    ):
        target.full_clean()
