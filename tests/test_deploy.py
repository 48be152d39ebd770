"""Deployment files, checked: every Kubernetes manifest valid against the schemas
of a pinned Kubernetes version, their cross-references whole (names, selectors,
probes, resources, one beat), the pods locked down, the RBAC the README lists, and
the image build file (hadolint, stages, non-root user, static files built in)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from diagnostics import queues

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
HADOLINT = Path(sys.executable).with_name("hadolint")
# The oldest minor the upstream project still supports when this was written; the
# newest bundled one too, so an API removed since is caught.
KUBERNETES_VERSIONS = ("1.35.0", "1.37.0")
# Applied on their own (README, "Kubernetes"): the Job once per release (its pod
# template is immutable), the Secret from the operator's secret store.
NOT_IN_KUSTOMIZATION = {"migrate-job.yaml", "secret.example.yaml"}
WORKERS = {
    "lotoops-worker-paging": "paging",
    "lotoops-worker-checks": "checks,celery",
    "lotoops-worker-long": "long",
}


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_all() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [r for r in load_all() if r["kind"] == kind]


def by_name(kind: str, name: str) -> dict[str, Any]:
    found = [r for r in of_kind(kind) if r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def pod_specs() -> dict[str, dict[str, Any]]:
    """Every workload's pod spec by workload name (Deployments and the Job)."""
    return {
        r["metadata"]["name"]: r["spec"]["template"]["spec"]
        for r in load_all()
        if r["kind"] in ("Deployment", "Job")
    }


def container(name: str) -> dict[str, Any]:
    (only,) = pod_specs()[name]["containers"]
    return only


# --- schemas ---------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path, version):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        # strict: a misspelt field (e.g. `readinesProbe`) is an error, not ignored.
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_catches_an_invalid_manifest():
    deployment = yaml.safe_load((K8S / "beat.yaml").read_text())
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    deployment["spec"]["replicas"] = 1
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_the_kustomization_lists_every_manifest_but_the_job_and_the_secret():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(
        p.name for p in manifest_files() if p.name not in NOT_IN_KUSTOMIZATION
    )


# --- cross-references --------------------------------------------------------------


def test_every_name_a_pod_refers_to_exists():
    accounts = {r["metadata"]["name"] for r in of_kind("ServiceAccount")}
    config_maps = {r["metadata"]["name"] for r in of_kind("ConfigMap")}
    secrets = {r["metadata"]["name"] for r in of_kind("Secret")}
    claims = {r["metadata"]["name"] for r in of_kind("PersistentVolumeClaim")}
    for name, spec in pod_specs().items():
        assert spec["serviceAccountName"] in accounts, name
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, name
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, name
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, (name, mount)
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
    for r in load_all():
        if r["kind"] not in ("Role", "RoleBinding"):
            assert r["metadata"].get("namespace", "lotoops") == "lotoops", r["metadata"]
    assert by_name("Namespace", "lotoops")


def test_the_service_selects_the_web_pods_on_their_port():
    service = by_name("Service", "lotoops-web")
    web = by_name("Deployment", "lotoops-web")
    labels = web["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert web["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # ... and nothing else: no worker or beat pod carries those labels.
    for other in load_all():
        if other["kind"] in ("Deployment", "Job") and other["metadata"]["name"] != "lotoops-web":
            other_labels = other["spec"]["template"]["metadata"]["labels"]
            assert not service["spec"]["selector"].items() <= other_labels.items()
    ports = {p["name"] for p in container("lotoops-web")["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    budget = by_name("PodDisruptionBudget", "lotoops-web")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_web_probes_ask_readyz_with_an_allowed_host():
    web = container("lotoops-web")
    allowed = by_name("ConfigMap", "lotoops")["data"]["ALLOWED_HOSTS"].split(",")
    for probe in ("readinessProbe", "livenessProbe"):
        get = web[probe]["httpGet"]
        # /readyz: only the database decides (Redis down must not empty the Service).
        assert get["path"] == "/readyz"
        hosts = [h["value"] for h in get.get("httpHeaders", []) if h["name"] == "Host"]
        # The kubelet sends the pod IP as Host otherwise, which Django refuses (400).
        assert hosts and hosts[0] in allowed


@pytest.mark.django_db
def test_healthz_answers_the_probe_as_the_kubelet_asks(client, settings):
    """The probe's request (path and Host header) against the app with the
    ConfigMap's ALLOWED_HOSTS: 200, as the kubelet needs to route traffic."""
    config = by_name("ConfigMap", "lotoops")["data"]
    settings.ALLOWED_HOSTS = config["ALLOWED_HOSTS"].split(",")
    get = container("lotoops-web")["readinessProbe"]["httpGet"]
    host = next(h["value"] for h in get["httpHeaders"] if h["name"] == "Host")
    assert client.get(get["path"], HTTP_HOST=host).status_code == 200
    # Without the header (the pod IP), Django refuses it: the header is needed.
    assert client.get(get["path"], HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_every_container_has_requests_and_limits():
    for name, spec in pod_specs().items():
        for c in spec["containers"] + spec.get("initContainers", []):
            resources = c.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), (name, kind)


def test_exactly_one_beat_that_stops_before_the_next_starts():
    beats = [
        r
        for r in of_kind("Deployment")
        if "beat" in r["spec"]["template"]["spec"]["containers"][0]["command"]
    ]
    assert [b["metadata"]["name"] for b in beats] == ["lotoops-beat"]
    assert beats[0]["spec"]["replicas"] == 1
    assert beats[0]["spec"]["strategy"] == {"type": "Recreate"}


def test_a_worker_per_queue_class():
    consumed = {}
    for name, queue_arg in WORKERS.items():
        command = container(name)["command"]
        assert command[:4] == ["celery", "-A", "lotoops", "worker"]
        (arg,) = [a for a in command if a.startswith("--queues=")]
        consumed[name] = arg.removeprefix("--queues=")
        assert consumed[name] == queue_arg
    every = {q for arg in consumed.values() for q in arg.split(",")}
    assert every == set(queues.all_queues("celery"))


def test_web_runs_one_uvicorn_process_per_container():
    command = container("lotoops-web")["command"]
    assert command[:3] == ["python", "-m", "uvicorn"]
    # --workers switches TCP_NODELAY off in the worker processes (uvicorn #3149).
    assert not any(a.startswith("--workers") for a in command)


def test_the_migration_job_migrates_then_seeds():
    command = " ".join(container("lotoops-migrate")["command"])
    assert re.search(r"manage\.py migrate --noinput && python manage\.py seed_runbook", command)
    assert by_name("Job", "lotoops-migrate")["spec"]["template"]["spec"]["restartPolicy"] == (
        "Never"
    )


# --- security ----------------------------------------------------------------------


def test_every_pod_runs_locked_down():
    for name, spec in pod_specs().items():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            writable = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
            # var/ (the key file fallback, temporary files) is scratch, per pod.
            assert "emptyDir" in writable["/app/var"], name


def test_only_the_workers_that_run_kubernetes_steps_get_a_token():
    runbook = by_name("ServiceAccount", "lotoops-runbook")
    assert runbook["automountServiceAccountToken"] is True
    assert by_name("ServiceAccount", "lotoops")["automountServiceAccountToken"] is False
    with_token = {
        name
        for name, spec in pod_specs().items()
        if spec["serviceAccountName"] == "lotoops-runbook"
    }
    assert with_token == {"lotoops-worker-checks", "lotoops-worker-long"}
    for name, spec in pod_specs().items():
        if name not in with_token:
            assert spec["automountServiceAccountToken"] is False, name


def test_the_role_is_bound_in_lotolink_to_the_runbook_account():
    role = by_name("Role", "lotoops-runbook")
    binding = by_name("RoleBinding", "lotoops-runbook")
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "lotolink"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "lotoops-runbook",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "lotoops-runbook", "namespace": "lotoops"}
    ]
    assert not of_kind("ClusterRole") and not of_kind("ClusterRoleBinding")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert not {"delete", "deletecollection", "escalate", "bind"} & set(rule["verbs"])


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def test_the_readme_lists_the_rbac_verb_by_verb():
    """The README's table and the Role grant exactly the same (resource, verb) pairs."""
    granted = role_grants()
    listed = set()
    table = re.findall(r"^\| `([^`]+)` \| `(\w+)` \| (.+) \|$", readme_section("Kubernetes"), re.M)
    for row in table:
        resource, verb, steps = row
        assert re.search(r"`[a-z]+\.[a-z_]+`", steps), row  # names the step(s) needing it
        listed.add((resource, verb))
    assert listed == granted


def test_the_readme_documents_the_secret_keys():
    secret = by_name("Secret", "lotoops")
    documented = readme_section("Kubernetes")
    env_example = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    for key in secret["stringData"]:
        assert f"`{key}`" in documented, key
        assert key in env_example, key  # a setting the code reads
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} <= set(secret["stringData"])
    config = by_name("ConfigMap", "lotoops")["data"]
    assert set(config) <= env_example
    assert not set(config) & set(secret["stringData"])


# --- the image -----------------------------------------------------------------------


def dockerfile_stages() -> list[dict[str, Any]]:
    """The Dockerfile's stages, each with its base, name and instructions (continuation
    lines joined, comments dropped)."""
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n(\s*#.*\n)*", " ", text)
    stages: list[dict[str, Any]] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word.upper() == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else ""
            stages.append({"base": parts[0], "name": name, "steps": []})
        elif stages:
            stages[-1]["steps"].append((word.upper(), rest))
    return stages


def test_hadolint_passes_on_the_dockerfile():
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN sudo apt-get install gcc\nUSER root\n")
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "DL3007" in result.stdout  # the `latest` tag


def test_the_image_is_multi_stage_non_root_with_static_files_built_in():
    stages = dockerfile_stages()
    names = [s["name"] for s in stages]
    assert len(stages) >= 2 and names[0] == "builder"
    final = stages[-1]
    # The final stage starts from the base image, not from the builder's layers.
    assert final["base"] == stages[0]["base"]
    steps = final["steps"]
    users = [arg for word, arg in steps if word == "USER"]
    assert users, "the final stage sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can verify it
    pods = {spec["securityContext"]["runAsUser"] for spec in pod_specs().values()}
    assert pods == {int(uid)}
    copies = [arg for word, arg in steps if word == "COPY"]
    assert any(re.match(r"--from=builder /opt/venv /opt/venv$", c) for c in copies)
    assert any(re.match(r"--from=\w+ /app/staticfiles /app/staticfiles$", c) for c in copies)
    builds = " ".join(arg for s in stages[:-1] for word, arg in s["steps"] if word == "RUN")
    assert "requirements.lock" in builds and "collectstatic" in builds
    runs = " ".join(arg for word, arg in steps if word == "RUN")
    # No compilers, no pip in the final stage: everything was built before.
    for word in ("gcc", "build-essential", "g++", "clang", "pip ", "collectstatic"):
        assert word not in runs, word
    env = " ".join(arg for word, arg in steps if word == "ENV")
    assert "STATIC_ROOT=/app/staticfiles" in env
    assert by_name("ConfigMap", "lotoops")["data"]["STATIC_ROOT"] == "/app/staticfiles"


def test_collectstatic_runs_as_the_image_build_runs_it(tmp_path):
    """The build stage's command, with its environment and no database, Redis or
    secret: the files the pages link to land in STATIC_ROOT."""
    (run,) = [
        arg
        for s in dockerfile_stages()
        for word, arg in s["steps"]
        if word == "RUN" and "collectstatic" in arg
    ]
    words = shlex.split(run)
    assignments = dict(w.split("=", 1) for w in words if re.match(r"^[A-Z_]+=", w))
    assert {"SECRET_KEY", "STATIC_ROOT"} <= set(assignments)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY"}
    }
    env |= assignments | {
        "LOTOOPS_VAR_DIR": str(tmp_path / "var"),
        "STATIC_ROOT": str(tmp_path / "static"),
    }
    command = [w for w in words if not re.match(r"^[A-Z_]+=", w)]
    assert command[1:] == ["manage.py", "collectstatic", "--noinput"]
    result = subprocess.run(
        [sys.executable, *command[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for wanted in ("css/app.css", "js/app.js", "vendor/htmx-2.0.11.min.js", "admin/css/base.css"):
        assert (tmp_path / "static" / wanted).is_file(), wanted


def test_the_build_context_leaves_out_secrets_and_local_state():
    ignored = set((ROOT / ".dockerignore").read_text().split("\n"))
    assert {".env", ".git", ".venv", "var", "**/__pycache__"} <= ignored
    # ... but keeps what the image needs.
    for needed in ("requirements.lock", "manage.py", "lotoops", "static", "templates"):
        assert needed not in ignored, needed


# --- the Role against the probes' own calls --------------------------------------------

PROBES = ROOT / "diagnostics" / "probes" / "kubernetes.py"
# The official client's method name -> the RBAC verbs the API server checks.
CALL_VERBS = {
    "read": ["get"],
    "list": ["list"],
    "patch": ["patch"],
    "create": ["create"],
    "replace": ["update"],
    "delete": ["delete"],
    # exec over a websocket GET: `get` before Kubernetes 1.35, `create` from then on.
    "connect_get": ["get", "create"],
    "connect_post": ["create"],
}
# The client's object name -> the RBAC resource (with its API group).
KINDS = {
    "pod": "pods",
    "pod_log": "pods/log",
    "pod_exec": "pods/exec",
    "event": "events",
    "service": "services",
    "secret": "secrets",
    "config_map": "configmaps",
    "deployment": "apps/deployments",
    "deployment_scale": "apps/deployments/scale",
    "replica_set": "apps/replicasets",
    "stateful_set": "apps/statefulsets",
    "network_policy": "networking.k8s.io/networkpolicies",
}


def rbac_needed_by(source: str) -> set[tuple[str, str]]:
    """The (resource, verb) pairs the Kubernetes client calls in `source` need."""
    needed = set()
    calls = r"\.(read|list|patch|create|replace|delete|connect_get|connect_post)_namespaced_(\w+)\b"
    for action, kind in re.findall(calls, source):
        if kind == "custom_object":
            continue
        assert kind in KINDS, f"a client call this test cannot map yet: {action}_{kind}"
        needed |= {(KINDS[kind], verb) for verb in CALL_VERBS[action]}
    custom = (
        r"(\w+)_namespaced_custom_object\(\s*\"([^\"]+)\",\s*\"[^\"]+\",\s*[^,]+,\s*\"([^\"]+)\""
    )
    for action, group, plural in re.findall(custom, source):
        needed |= {(f"{group}/{plural}", verb) for verb in CALL_VERBS[action]}
    return needed


def role_grants() -> set[tuple[str, str]]:
    granted = set()
    for rule in by_name("Role", "lotoops-runbook")["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                prefix = f"{group}/" if group else ""
                granted |= {(prefix + resource, verb) for verb in rule["verbs"]}
    return granted


def test_the_rbac_mapping_reads_client_calls():
    source = """
        self.core.list_namespaced_pod(ns)
        self.apps.patch_namespaced_deployment_scale(name, ns, body)
        stream(self.core.connect_get_namespaced_pod_exec, pod, ns)
        custom.list_namespaced_custom_object(
            "metrics.k8s.io",
            "v1beta1",
            self.namespace,
            "pods",
        )
    """
    assert rbac_needed_by(source) == {
        ("pods", "list"),
        ("apps/deployments/scale", "patch"),
        ("pods/exec", "get"),
        ("pods/exec", "create"),
        ("metrics.k8s.io/pods", "list"),
    }


def test_the_role_grants_exactly_what_the_kubernetes_probes_call():
    """Least privilege both ways: every call the probes make is allowed, and nothing
    is granted that no probe uses. (The probes land with issue 9's Kubernetes part;
    until then there is nothing to compare.)"""
    if not PROBES.exists():
        pytest.skip("diagnostics/probes/kubernetes.py is not on this branch yet")
    assert rbac_needed_by(PROBES.read_text()) == role_grants()


def test_no_web_command_trusts_x_forwarded_for_by_default():
    """uvicorn's --proxy-headers trusts loopback (or FORWARDED_ALLOW_IPS) by default:
    every shipped web command turns it off; behind a proxy, the operator names it."""
    from lotoops.embedded import child_commands, proxy_args

    dockerfile = (ROOT / "Dockerfile").read_text()
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands = {
        "Dockerfile": json.loads(cmd),
        "compose": compose["services"]["web"]["command"],
        "k8s": container("lotoops-web")["command"],
        "run": child_commands("python", "127.0.0.1", 8000, {})["web"],
    }
    for name, command in commands.items():
        assert "--no-proxy-headers" in command, name
        assert "--proxy-headers" not in command, name
        assert not any("forwarded-allow-ips" in arg for arg in command), name
    assert proxy_args({"FORWARDED_ALLOW_IPS": " 10.0.0.5 , 10.1.0.0/16"}) == [
        "--proxy-headers",
        "--forwarded-allow-ips",
        "10.0.0.5,10.1.0.0/16",
    ]
    with pytest.raises(ValueError, match="never"):
        proxy_args({"FORWARDED_ALLOW_IPS": "10.0.0.5,*"})
