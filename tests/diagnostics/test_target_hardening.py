"""Targets cannot be turned against us (issue 20, hole 2): a secret belongs to the
addresses it was bound for, targets never reach link-local (cloud metadata),
loopback or private addresses unless TARGET_ALLOWED_NETWORKS lists them (at save
and when a probe connects), no probe follows a redirect, `in_cluster` never goes
with a URL, and a kubeconfig comes only from KUBECONFIG_DIR and runs no command.

The peers are real servers on loopback: the suite allows loopback (tests/conftest.py);
the refusals are tested with the allow-list empty."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from diagnostics import services
from diagnostics.models import CheckRun, RunbookStep, RunStatus, Target
from diagnostics.probes.base import ProbeError, get_probe
from diagnostics.seed import seed_runbooks
from diagnostics.tasks import run_check
from tests import factories

pytestmark = pytest.mark.django_db

TOKEN = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"
TOKEN_ENV = "LOTOOPS_TARGET_STRIPE_KEY"


class Recorder(BaseHTTPRequestHandler):
    """Answers 200 {"status": "ok"} (or a redirect to `server.redirect_to`) and
    records every request with its Authorization header."""

    server: Peer

    def do_GET(self) -> None:
        self.server.seen.append(
            {"path": self.path, "authorization": self.headers.get("Authorization")}
        )
        if self.server.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.server.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = json.dumps({"status": "ok"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Peer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, redirect_to: str = "") -> None:
        super().__init__(("127.0.0.1", 0), Recorder)
        self.seen: list[dict[str, str | None]] = []
        self.redirect_to = redirect_to

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    """Starts recording peers on loopback (stopped after the test)."""
    started: list[tuple[Peer, threading.Thread]] = []

    def start(redirect_to: str = "") -> Peer:
        peer = Peer(redirect_to)
        thread = threading.Thread(target=peer.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((peer, thread))
        return peer

    yield start
    for peer, thread in started:
        peer.shutdown()
        peer.server_close()
        thread.join(timeout=5)


@pytest.fixture
def platform(peers) -> Peer:
    """The real endpoint the secret was bound for."""
    return peers()


@pytest.fixture
def listener(peers) -> Peer:
    """The attacker's listener."""
    return peers()


@pytest.fixture
def stripe_key(monkeypatch) -> str:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    return TOKEN


@pytest.fixture
def admin1(runbook) -> factories.User:
    """An Admin (staff, the Admins group), not a superuser."""
    user = factories.UserFactory(username="admin1", is_staff=True)
    user.groups.add(Group.objects.get(name="Admins"))
    return user


@pytest.fixture
def root(runbook) -> factories.User:
    return factories.UserFactory(username="root", is_staff=True, is_superuser=True)


def _form(target: Target, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": target.name,
        "kind": target.kind,
        "url": target.url,
        "secret_env": target.secret_env,
        "options": json.dumps(target.options),
        "active": "on",
    }
    data.update(changes)
    return data


def _run_health(responder: factories.User) -> CheckRun:
    """init.health run as a responder would, and executed as a worker would."""
    incident = factories.declare(actor=responder, severity="P2")
    (run,) = services.request_check(
        incident, RunbookStep.objects.get(key="init.health"), actor=responder
    )
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    return run


# --- a secret belongs to the addresses it was bound for ---------------------------------


def test_an_admin_who_repoints_a_target_sends_its_secret_nowhere(
    client, admin1, responder, platform, listener, stripe_key
):
    seed_runbooks()
    target = Target.objects.create(
        name="lotolink-api", kind="http", url=f"{platform.base}/health", secret_env=TOKEN_ENV
    )
    client.force_login(admin1)
    response = client.post(
        f"/admin/diagnostics/target/{target.pk}/change/",
        _form(target, url=f"{listener.base}/health"),
        follow=True,
    )
    assert response.status_code == 200
    target.refresh_from_db()
    assert target.url == f"{listener.base}/health"

    run = _run_health(responder)
    assert run.status == RunStatus.SUCCEEDED
    assert [seen["authorization"] for seen in listener.seen] == [None]
    assert platform.seen == []
    assert target.secret_env == "" and target.secret_hosts == []
    assert b"its secret binding (LOTOOPS_TARGET_STRIPE_KEY) was cleared" in response.content


def test_only_a_superuser_binds_a_secret(client, admin1, root, listener, stripe_key):
    target = Target.objects.create(name="lotolink-api", kind="http", url=f"{listener.base}/health")
    client.force_login(admin1)
    client.post(
        f"/admin/diagnostics/target/{target.pk}/change/", _form(target, secret_env=TOKEN_ENV)
    )
    target.refresh_from_db()
    assert target.secret_env == ""
    # Nor through an option that names a variable (a Stripe target's webhook secret).
    refused = client.post(
        f"/admin/diagnostics/target/{target.pk}/change/",
        _form(target, options=json.dumps({"webhook_secret_env": TOKEN_ENV})),
    )
    assert b"Only a superuser may set or change webhook_secret_env" in refused.content
    target.refresh_from_db()
    assert target.options == {}

    client.force_login(root)
    client.post(
        f"/admin/diagnostics/target/{target.pk}/change/", _form(target, secret_env=TOKEN_ENV)
    )
    target.refresh_from_db()
    assert target.secret_env == TOKEN_ENV
    assert target.secret_hosts == [listener.base]


def test_an_admin_cannot_create_a_target_with_a_secret(client, admin1, listener, stripe_key):
    client.force_login(admin1)
    client.post(
        "/admin/diagnostics/target/add/",
        {
            "name": "exfil",
            "kind": "http",
            "url": f"{listener.base}/health",
            "secret_env": TOKEN_ENV,
            "options": "{}",
            "active": "on",
        },
    )
    target = Target.objects.get(name="exfil")
    assert target.secret_env == "" and target.secret() == ""


def test_a_row_repointed_around_the_admin_is_refused_at_run_time(
    responder, platform, listener, stripe_key
):
    seed_runbooks()
    target = Target.objects.create(
        name="lotolink-api", kind="http", url=f"{platform.base}/health", secret_env=TOKEN_ENV
    )
    incident = factories.declare(actor=responder, severity="P2")
    (run,) = services.request_check(
        incident, RunbookStep.objects.get(key="init.health"), actor=responder
    )
    Target.objects.filter(pk=target.pk).update(url=f"{listener.base}/health")
    assert run_check.apply(args=(run.pk,)).get() == "refused"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert f"was bound for {platform.base}" in run.summary
    assert f"now points at {listener.base}" in run.summary
    assert "superuser binds the secret again" in run.summary
    assert TOKEN not in run.summary
    assert listener.seen == [] and platform.seen == []
    target.refresh_from_db()
    assert target.secret() == ""


# --- metadata, private and loopback addresses --------------------------------------------

FORBIDDEN = [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local"),
    ("http://[fd00:ec2::254]/", "fd00:ec2::254 is a private"),
    ("http://[fe80::1]/", "fe80::1 is a link-local"),
    ("redis://127.0.0.1:6379", "127.0.0.1 is a loopback"),
    ("http://[::1]:8080/", "::1 is a loopback"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1 is a loopback"),
    ("postgres://lotolink@10.0.0.5:5432/lotolink", "10.0.0.5 is a private"),
    ("http://172.16.0.1/", "172.16.0.1 is a private"),
    ("http://192.168.1.1/", "192.168.1.1 is a private"),
    ("http://100.64.0.1/", "100.64.0.1 is a shared"),
    ("http://0.0.0.0:80/", "0.0.0.0 is a unspecified"),
    ("http://localhost:8080/health", "localhost resolves to"),
]


@pytest.mark.parametrize(("url", "named"), FORBIDDEN)
def test_forbidden_addresses_are_refused_on_save(settings, url, named):
    settings.TARGET_ALLOWED_NETWORKS = []
    kind = {"redis": "redis", "postgres": "postgres"}.get(url.split(":", 1)[0], "http")
    target = Target(name="t", kind=kind, url=url)
    with pytest.raises(ValidationError) as raised:
        target.full_clean()
    message = " ".join(raised.value.message_dict["url"])
    assert named in message and "TARGET_ALLOWED_NETWORKS" in message


def test_the_admin_form_names_the_refused_address(client, root, settings):
    settings.TARGET_ALLOWED_NETWORKS = []
    client.force_login(root)
    response = client.post(
        "/admin/diagnostics/target/add/",
        {
            "name": "metadata",
            "kind": "http",
            "url": "http://169.254.169.254/latest/meta-data/iam/",
            "secret_env": "",
            "options": "{}",
            "active": "on",
        },
    )
    assert response.status_code == 200
    assert b"169.254.169.254 is a link-local (cloud metadata) address" in response.content
    assert not Target.objects.exists()


def test_allow_listed_networks_and_public_addresses_are_accepted(settings):
    settings.TARGET_ALLOWED_NETWORKS = ["10.0.0.0/8", "fd00::/8"]
    for url in ("http://10.1.2.3/", "http://[fd00::5]/", "https://93.184.216.34/"):
        Target(name="t", kind="http", url=url).full_clean()
    with pytest.raises(ValidationError, match=r"192\.168\.0\.1 is a private"):
        Target(name="t", kind="http", url="http://192.168.0.1/").full_clean()


def test_a_target_resolving_to_loopback_is_refused_at_run_time(
    settings, responder, platform, stripe_key
):
    """Saved around the admin (no validation): the worker refuses before connecting."""
    seed_runbooks()
    Target.objects.create(
        name="lotolink-api",
        kind="http",
        url=f"http://localhost:{platform.port}/health",
        secret_env=TOKEN_ENV,
    )
    settings.TARGET_ALLOWED_NETWORKS = []
    incident = factories.declare(actor=responder, severity="P2")
    step = RunbookStep.objects.get(key="init.health")
    with pytest.raises(services.CheckError, match="localhost resolves to"):
        services.request_check(incident, step, actor=responder)
    settings.TARGET_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
    (run,) = services.request_check(incident, step, actor=responder)
    settings.TARGET_ALLOWED_NETWORKS = []
    assert run_check.apply(args=(run.pk,)).get() == "refused"
    run.refresh_from_db()
    assert "a loopback address" in run.summary and "TARGET_ALLOWED_NETWORKS" in run.summary
    assert platform.seen == []


def _unsaved(kind: str, url: str, **options: object) -> Target:
    return Target(name="t", kind=kind, url=url, secret_env=TOKEN_ENV, options=options)


HTTP_PROBES = [
    ("http.health", "http", "/health"),
    ("prometheus.query", "prometheus", ""),
    ("stripe.health", "stripe", ""),
    ("kubernetes.pods", "kubernetes", ""),
]


def _params(probe: str) -> dict:
    return {"query": "up"} if probe == "prometheus.query" else {}


@pytest.mark.parametrize(("probe", "kind", "path"), HTTP_PROBES)
def test_each_http_probe_refuses_a_loopback_name_before_connecting(
    settings, platform, stripe_key, probe, kind, path
):
    settings.TARGET_ALLOWED_NETWORKS = []
    target = _unsaved(kind, f"http://localhost:{platform.port}{path}")
    built = get_probe(probe).build(target, _params(probe), timeout=10)
    with pytest.raises(ProbeError, match=r"localhost resolves to (127\.0\.0\.1|::1), a loopback"):
        built.run()
    assert platform.seen == []


def test_the_postgres_probe_refuses_a_loopback_name_before_connecting(settings):
    settings.TARGET_ALLOWED_NETWORKS = []
    target = _unsaved("postgres", "postgres://postgres@localhost:5432/postgres")
    with pytest.raises(ProbeError, match=r"localhost resolves to .*, a loopback"):
        get_probe("postgres.select_one").build(target, {}, timeout=10).run()


def test_the_http_probe_connects_to_the_address_it_checked(monkeypatch, platform):
    """DNS rebinding: the name is resolved once, checked, and that address is the one
    connected to (a second answer, 169.254.169.254, is never asked for)."""
    answers: list[str] = []
    real = socket.getaddrinfo

    def rebinding_dns(host: str, *args: object, **kwargs: object) -> list:
        if host != "api.lotolink.test":
            return real(host, *args, **kwargs)
        answers.append(host)
        address = "127.0.0.1" if len(answers) == 1 else "169.254.169.254"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    target = _unsaved("http", f"http://api.lotolink.test:{platform.port}/health")
    result = get_probe("http.health").build(target, {}, timeout=10).run()
    assert result.outcome == "ok"
    assert answers == ["api.lotolink.test"]
    assert [seen["path"] for seen in platform.seen] == ["/health"]


# --- no redirects ------------------------------------------------------------------------


@pytest.mark.parametrize(("probe", "kind", "path"), HTTP_PROBES)
def test_no_probe_follows_a_redirect(peers, stripe_key, probe, kind, path):
    inside = peers()  # what the redirect points at: an internal service
    door = peers(redirect_to=inside.base)
    target = _unsaved(kind, f"{door.base}{path}")
    built = get_probe(probe).build(target, _params(probe), timeout=10)
    try:
        result = built.run()
    except ProbeError as exc:
        assert TOKEN not in str(exc)
    else:
        assert result.outcome != "ok"
    assert len(door.seen) >= 1
    assert inside.seen == []


# --- Kubernetes: in_cluster, kubeconfig ----------------------------------------------------


def test_in_cluster_never_goes_with_a_url(platform):
    target = Target(name="k8s", kind="kubernetes", url=platform.base, options={"in_cluster": True})
    with pytest.raises(ValidationError, match=r"in_cluster .* never goes with a URL"):
        target.full_clean()
    with pytest.raises(ProbeError, match="never goes with a URL"):
        get_probe("kubernetes.pods").build(target, {}, timeout=10).run()
    assert platform.seen == []
    # Without a URL it is valid (the pod's own API server).
    Target(name="k8s", kind="kubernetes", url="", options={"in_cluster": True}).full_clean()


def _kubeconfig(server: str, user: dict) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "c", "cluster": {"server": server}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "ctx",
        }
    )


@pytest.fixture
def kube_dir(tmp_path, settings):
    folder = tmp_path / "kubeconfig"
    folder.mkdir()
    settings.KUBECONFIG_DIR = folder
    return folder


def test_a_kubeconfig_outside_its_folder_is_refused(kube_dir, tmp_path, platform):
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(_kubeconfig(platform.base, {"token": "t"}))
    (kube_dir / "link.yaml").symlink_to(outside)
    for name in (str(outside), "../elsewhere.yaml", "link.yaml", "/etc/passwd"):
        target = Target(name="k8s", kind="kubernetes", url="", options={"kubeconfig": name})
        with pytest.raises(ValidationError):
            target.full_clean()
        with pytest.raises(ProbeError, match=r"outside|'\.\.' is not allowed"):
            get_probe("kubernetes.pods").build(target, {}, timeout=10).run()
    assert platform.seen == []


@pytest.mark.parametrize("key", ["exec", "auth-provider"])
def test_a_kubeconfig_that_runs_a_command_is_refused(kube_dir, tmp_path, platform, key):
    ran = tmp_path / "ran"
    user = (
        {
            "exec": {
                "apiVersion": "client.authentication.k8s.io/v1",
                "command": "touch",
                "args": [str(ran)],
            }
        }
        if key == "exec"
        else {"auth-provider": {"name": "oidc", "config": {"cmd-path": "touch"}}}
    )
    (kube_dir / "prod.yaml").write_text(_kubeconfig(platform.base, user))
    target = Target(name="k8s", kind="kubernetes", url="", options={"kubeconfig": "prod.yaml"})
    with pytest.raises(ValidationError, match=f"user u has {key}"):
        target.full_clean()
    with pytest.raises(ProbeError, match=f"user u has {key}: a kubeconfig that runs a command"):
        get_probe("kubernetes.pods").build(target, {}, timeout=10).run()
    assert not ran.exists()
    assert platform.seen == []
