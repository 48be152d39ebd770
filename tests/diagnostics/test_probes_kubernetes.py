"""The Kubernetes probes through the official client against an emulated API
server on 127.0.0.1 (tests/diagnostics/k8s_server.py): the evidence each
diagnostic derives from realistic objects, the exact requests each action
sends, and bad input refused with nothing changed."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from diagnostics.models import Target
from diagnostics.probes.base import ProbeError, TransientProbeError, get_probe
from tests.diagnostics import k8s_server as k8s

TOKEN = "k8s-tok-5f1e2d3c4b5a69788796"
BACKEND = "/apis/apps/v1/namespaces/lotolink/deployments/lotolink-backend"
RUNBOOK = Path(__file__).resolve().parents[2] / "diagnostics" / "runbooks" / "lotolink.toml"


@pytest.fixture
def kube():
    server = k8s.KubeServer(token=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def target(kube, monkeypatch):
    monkeypatch.setenv("LOTOOPS_TARGET_K8S_TOKEN", TOKEN)
    return Target(
        name="lotolink-k8s", kind="kubernetes", url=kube.url, secret_env="LOTOOPS_TARGET_K8S_TOKEN"
    )


@pytest.fixture
def outage(kube):
    """A backend outage: one pod OOMKilled (and back), one crash-looping, one
    healthy; revision 7 rolled out five minutes ago; the first pod near its
    memory limit."""
    kube.add(k8s.pod("lotolink-backend-7d9f8c6b5-a", statuses=[k8s.oom_killed_status(4)]))
    kube.add(k8s.pod("lotolink-backend-7d9f8c6b5-b", statuses=[k8s.crash_loop_status(7)]))
    kube.add(k8s.pod("lotolink-backend-7d9f8c6b5-c"))
    kube.add(k8s.pod("postgres-0", app="postgres", image="postgres:16"))
    kube.add(k8s.deployment(revision=7, image="registry.lotolink.com/lotolink-backend:1.8.0"))
    kube.add(
        k8s.replica_set(
            6,
            "registry.lotolink.com/lotolink-backend:1.7.3",
            created=k8s.ago(days=2),
            change_cause="release 1.7.3",
        )
    )
    kube.add(
        k8s.replica_set(
            7,
            "registry.lotolink.com/lotolink-backend:1.8.0",
            created=k8s.ago(minutes=5),
            replicas=3,
            change_cause="release 1.8.0",
        )
    )
    kube.add(k8s.pod_metrics("lotolink-backend-7d9f8c6b5-a", "480Mi"))  # 94 % of 512Mi
    kube.add(k8s.pod_metrics("lotolink-backend-7d9f8c6b5-b", "20Mi", cpu="1m"))
    kube.add(k8s.pod_metrics("lotolink-backend-7d9f8c6b5-c", "210Mi", cpu="120m"))
    return kube


def probe(name, target, params=None, *, timeout=10.0):
    lines: list[str] = []
    built = get_probe(name).build(target, params or {}, timeout=timeout, emit=lines.append)
    return built, lines


def run(name, target, params=None, **kwargs):
    built, lines = probe(name, target, params, **kwargs)
    return built.run(), lines


# --- diagnostics ----------------------------------------------------------------------


def test_pods_names_the_oom_killed_the_crash_looping_and_the_not_ready(outage, target):
    result, lines = run("kubernetes.pods", target)
    assert result.outcome == "failing"
    assert result.summary == (
        "3 pods with app=lotolink-backend in lotolink: 1 OOMKilled, 1 in CrashLoopBackOff, "
        "1 not ready"
    )
    (oom,) = result.evidence["oom_killed"]["containers"]
    assert 0.9 <= oom["minutes_ago"] <= 2  # when it was killed, not only that it was
    assert (oom["pod"], oom["container"], oom["state"]) == (
        "lotolink-backend-7d9f8c6b5-a",
        "backend",
        "last",
    )
    assert result.evidence["crash_looping"] == {
        "containers": [
            {"pod": "lotolink-backend-7d9f8c6b5-b", "container": "backend", "restarts": 7}
        ]
    }
    assert result.evidence["not_ready"] == {"pods": ["lotolink-backend-7d9f8c6b5-b"]}
    table = "\n".join(lines)
    assert re.search(r"7d9f8c6b5-a\s+1/1\s+Running\s+4\s+backend: OOMKilled", table)
    assert re.search(r"7d9f8c6b5-b\s+0/1\s+CrashLoopBackOff\s+7\s+backend: Error", table)
    assert re.search(r"7d9f8c6b5-c\s+1/1\s+Running\s+0\s+-", table)
    assert "postgres-0" not in table  # only the backend's pods (app=lotolink-backend)
    (listed,) = [r for r in outage.requests if r.path.endswith("/pods")]
    assert listed.query == {"labelSelector": ["app=lotolink-backend"]}
    assert listed.path == "/api/v1/namespaces/lotolink/pods"


def test_healthy_pods_are_ok_and_an_empty_selection_is_a_finding(kube, target):
    kube.add(k8s.pod("lotolink-backend-1"))
    result, _ = run("kubernetes.pods", target)
    assert (result.outcome, result.evidence) == ("ok", {})
    assert result.summary == "1 pods with app=lotolink-backend in lotolink, all ready"
    result, _ = run("kubernetes.pods", target, {"selector": "app=nothing"})
    assert (result.outcome, result.summary) == ("failing", "no pods with app=nothing in lotolink")


def test_logs_tail_each_pod_and_a_pattern_counts_matches(outage, target):
    pods = ["lotolink-backend-7d9f8c6b5-a", "lotolink-backend-7d9f8c6b5-b"]
    outage.add_logs(pods[0], "backend", [f"GET /plays {n} 200" for n in range(150)])
    outage.add_logs(
        pods[0],
        "backend",
        ["banca La Suerte: signature mismatch (HMAC)", "banca Real: forwarded play 88"],
    )
    outage.add_logs(
        pods[1],
        "backend",
        ["banca La Suerte: invalid signature", "banca La Suerte: signature ok", f"auth {TOKEN}"],
    )
    result, lines = run("kubernetes.logs", target, {"tail": 100})
    assert result.outcome == "ok"
    assert result.data["pods"] == {pods[0]: 100, pods[1]: 3, "lotolink-backend-7d9f8c6b5-c": 0}
    assert f"[{pods[1]}] auth •••" in lines and TOKEN not in "\n".join(lines)
    assert lines[0] == f"[{pods[0]}] GET /plays 52 200"
    logs = [r for r in outage.requests if r.path.endswith("/log")]
    assert {r.query["tailLines"][0] for r in logs} == {"100"}

    result, lines = run(
        "kubernetes.logs",
        target,
        {
            "tail": 1000,
            "pattern": r"(?i)signature.*(mismatch|invalid)|invalid signature",
            "evidence": "signature_failures",
        },
    )
    assert result.outcome == "failing"
    assert result.evidence["signature_failures"]["matches"] == 2
    assert result.evidence["signature_failures"]["pods"] == {
        pods[0]: 1,
        pods[1]: 1,
        "lotolink-backend-7d9f8c6b5-c": 0,
    }
    assert f"[{pods[1]}] banca La Suerte: invalid signature" in lines
    assert "GET /plays" not in "\n".join(lines)

    # The runbook's own banca.signature_logs step finds the same two.
    (step,) = [s for s in runbook_steps() if s["key"] == "banca.signature_logs"]
    result, _ = run("kubernetes.logs", target, step["params"])
    assert result.evidence["signature_failures"]["matches"] == 2

    result, _ = run("kubernetes.logs", target, {"pattern": "webhook", "tail": 1000})
    assert (result.outcome, result.data["matches"], result.evidence) == ("ok", 0, {})


def test_a_bad_log_pattern_is_refused_before_any_request(kube, target):
    with pytest.raises(ProbeError, match="not a valid regular expression"):
        probe("kubernetes.logs", target, {"pattern": "signature("})
    assert kube.requests == []


def test_a_deploy_five_minutes_old_is_a_recent_deploy(outage, target):
    result, lines = run("kubernetes.recent_deploys", target)
    assert result.outcome == "warning"
    found = result.evidence["recent_deploy"]
    assert (found["revision"], found["previous_revision"]) == (7, 6)
    assert found["images"] == ["registry.lotolink.com/lotolink-backend:1.8.0"]
    assert found["previous_images"] == ["registry.lotolink.com/lotolink-backend:1.7.3"]
    assert 4.9 <= found["minutes_ago"] <= 6
    assert [r["revision"] for r in result.data["revisions"]] == [6, 7]
    assert re.search(r"^7\s+\S+\s+5m\s+3\s+registry\S+:1\.8\.0\s+release 1\.8\.0$", lines[-1])
    # Outside a 3-minute window it is history, not a suspect.
    result, _ = run("kubernetes.recent_deploys", target, {"window_minutes": 3})
    assert (result.outcome, result.evidence) == ("ok", {})


def test_a_replica_set_of_another_deployment_is_not_a_revision(outage, target):
    stranger = k8s.replica_set(9, "other:1", created=k8s.ago(minutes=1))
    stranger["metadata"]["name"] = "lotolink-backend-copy-x"
    stranger["metadata"]["ownerReferences"][0]["uid"] = "uid-someone-else"
    outage.add(stranger)
    result, _ = run("kubernetes.recent_deploys", target)
    assert [r["revision"] for r in result.data["revisions"]] == [6, 7]


def test_top_finds_a_pod_near_its_memory_limit(outage, target):
    result, lines = run("kubernetes.top", target)
    assert result.outcome == "failing"
    (near,) = result.evidence["memory_pressure"]["containers"]
    assert near["pod"] == "lotolink-backend-7d9f8c6b5-a"
    assert near["memory_bytes"] == 480 * 2**20 and near["memory_limit_bytes"] == 512 * 2**20
    assert near["memory_ratio"] == pytest.approx(0.9375)
    assert re.search(r"7d9f8c6b5-a\s+backend\s+250m\s+480Mi\s+512Mi\s+94%", "\n".join(lines))
    (metrics,) = [r for r in outage.requests if "metrics.k8s.io" in r.path]
    assert metrics.path == "/apis/metrics.k8s.io/v1beta1/namespaces/lotolink/pods"
    result, _ = run("kubernetes.top", target, {"memory_ratio": 0.95})
    assert (result.outcome, result.evidence) == ("ok", {})


def test_top_says_plainly_when_metrics_server_is_not_installed(outage, target):
    outage.metrics_installed = False
    result, _lines = run("kubernetes.top", target)
    assert result.outcome == "warning"
    assert result.summary.startswith("metrics-server is not installed")
    assert result.data == {"metrics_available": False}


def test_rollout_status_reads_like_kubectl(kube, target):
    kube.add(k8s.deployment(replicas=3, updated=1, ready=2))
    result, _lines = run("kubernetes.rollout_status", target)
    assert (result.outcome, result.summary) == (
        "warning",
        'waiting for deployment "lotolink-backend" rollout to finish: '
        "1 out of 3 new replicas have been updated",
    )
    kube.add(k8s.deployment(replicas=3))
    result, _ = run("kubernetes.rollout_status", target)
    assert (result.outcome, result.summary) == (
        "ok",
        'deployment "lotolink-backend" successfully rolled out',
    )
    stuck = k8s.deployment(replicas=3, updated=1)
    stuck["status"]["conditions"][1].update(
        status="False", reason="ProgressDeadlineExceeded", message="timed out progressing"
    )
    kube.add(stuck)
    result, _ = run("kubernetes.rollout_status", target)
    assert result.outcome == "failing" and "progress deadline" in result.summary


def test_describe_pod_shows_conditions_states_and_its_events(outage, target):
    outage.add(
        k8s.event(
            "lotolink-backend-7d9f8c6b5-b",
            "BackOff",
            "Back-off restarting failed container backend",
            type_="Warning",
            count=31,
        )
    )
    outage.add(k8s.event("lotolink-backend-7d9f8c6b5-c", "Pulled", "Container image pulled"))
    result, lines = run("kubernetes.describe_pod", target)  # the pod that is not ready
    assert result.data["pod"] == "lotolink-backend-7d9f8c6b5-b"
    assert result.outcome == "warning"
    assert {"type": "Ready", "status": "False", "reason": "ContainersNotReady"} in result.data[
        "conditions"
    ]
    assert result.data["containers"][0]["state"] == "CrashLoopBackOff"
    assert result.data["containers"][0]["last_state"] == "Terminated: Error (1)"
    assert [e["reason"] for e in result.data["events"]] == ["BackOff"]
    assert any("BackOff" in line and "x31" in line for line in lines)
    (events,) = [r for r in outage.requests if r.path.endswith("/events")]
    assert events.query["fieldSelector"] == [
        "involvedObject.name=lotolink-backend-7d9f8c6b5-b,involvedObject.kind=Pod"
    ]


def test_events_are_sorted_by_time(kube, target):
    kube.add(k8s.event("a", "Second", "two", minutes_ago=5))
    kube.add(k8s.event("b", "Last", "three", minutes_ago=1, type_="Warning"))
    kube.add(k8s.event("c", "First", "one", minutes_ago=30))
    result, lines = run("kubernetes.events", target)
    assert [e["reason"] for e in result.data["events"]] == ["First", "Second", "Last"]
    assert (result.outcome, result.data["warnings"]) == ("warning", 1)
    assert lines[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]


def test_get_all_lists_the_namespace(outage, target):
    result, lines = run("kubernetes.get_all", target)
    assert result.data["counts"] == {
        "pod": 4,
        "service": 0,
        "deployment": 1,
        "replicaset": 2,
        "statefulset": 0,
    }
    assert any(line.startswith("deployment.apps/lotolink-backend") for line in lines)


def test_logs_of_all_pods_cover_every_container(kube, target):
    kube.add(k8s.pod("lotolink-backend-1", containers=["backend", "proxy"]))
    kube.add_logs("lotolink-backend-1", "backend", ["started"])
    kube.add_logs("lotolink-backend-1", "proxy", ["envoy ready", "upstream 503"])
    result, lines = run("kubernetes.logs_all_pods", target)
    assert result.data["containers"] == {
        "lotolink-backend-1/backend": 1,
        "lotolink-backend-1/proxy": 2,
    }
    assert "[lotolink-backend-1/proxy] upstream 503" in lines
    # Without a container, kubernetes.logs reads the one kubectl would: the first.
    result, lines = run("kubernetes.logs", target)
    assert lines == ["started"]
    assert kube.requests[-1].query["container"] == ["backend"]
    # A container the pod does not have is refused by the API server, in its words.
    result, _ = run("kubernetes.logs", target, {"container": "sidecar"})
    assert result.summary == (
        "no logs available from the 1 pods: container sidecar is not valid for pod "
        "lotolink-backend-1"
    )


def test_logs_go_on_past_a_pod_still_starting_and_read_a_crashed_container(kube, target):
    starting = k8s.container_status(ready=False, state={"waiting": {"reason": "ContainerCreating"}})
    kube.add(k8s.pod("lotolink-backend-new", statuses=[starting]))
    kube.add(k8s.pod("lotolink-backend-old", statuses=[k8s.crash_loop_status(7)]))
    kube.add_logs("lotolink-backend-old", "backend", ["starting up"])
    kube.add_logs(
        "lotolink-backend-old",
        "backend",
        ["panic: connect to redis: i/o timeout", "exit status 1"],
        previous=True,
    )
    result, lines = run("kubernetes.logs", target)
    assert result.outcome == "ok"
    assert result.data["unavailable"] == {
        "lotolink-backend-new": 'container "backend" in pod "lotolink-backend-new" is waiting '
        "to start: ContainerCreating"
    }
    assert "[lotolink-backend-old] starting up" in lines
    result, lines = run("kubernetes.logs", target, {"previous": True, "pattern": "panic"})
    assert result.data["matches"] == 1
    assert "[lotolink-backend-old] panic: connect to redis: i/o timeout" in lines
    assert "previous terminated container" in result.data["unavailable"]["lotolink-backend-new"]
    kube.objects.clear()
    kube.add(k8s.pod("lotolink-backend-new", statuses=[starting]))
    result, _ = run("kubernetes.logs", target)
    assert result.outcome == "warning"
    assert result.summary.startswith("no logs available from the 1 pods: container")


def test_logs_follow_streams_live_lines_then_stops_by_itself(kube, target):
    kube.add(k8s.pod("lotolink-backend-1"))
    kube.add_logs("lotolink-backend-1", "backend", ["before"])
    seen: list[str] = []

    def later() -> None:
        time.sleep(0.4)
        kube.add_logs("lotolink-backend-1", "backend", ["live one", "live two"])

    writer = threading.Thread(target=later)
    writer.start()
    built = get_probe("kubernetes.logs_follow").build(
        target, {"seconds": 1.5}, timeout=10, emit=seen.append
    )
    started = time.monotonic()
    result = built.run()
    elapsed = time.monotonic() - started
    writer.join()
    assert seen == ["before", "live one", "live two"]
    assert 1.4 <= elapsed < 4
    assert result.summary == "followed pod lotolink-backend-1 for 3 lines: stopped after 1.5 s"
    (follow,) = [r for r in kube.requests if r.path.endswith("/log")]
    assert follow.query["follow"] == ["true"]
    # And by line count, long before the time is up.
    kube.add_logs("lotolink-backend-1", "backend", [f"line {n}" for n in range(50)])
    started = time.monotonic()
    result, lines = run("kubernetes.logs_follow", target, {"seconds": 30, "max_lines": 5})
    assert len(lines) == 5 and time.monotonic() - started < 5
    assert result.summary.endswith("stopped after 5 lines")


def test_logs_follow_reads_a_crash_looping_pod_when_none_is_ready(kube, target):
    kube.add(k8s.pod("lotolink-backend-1", statuses=[k8s.crash_loop_status()]))
    kube.add_logs("lotolink-backend-1", "backend", ["panic: out of memory"])
    result, lines = run("kubernetes.logs_follow", target, {"seconds": 0.5})
    assert lines == ["panic: out of memory"]
    assert result.data["pod"] == "lotolink-backend-1"


def test_disk_runs_df_in_the_database_pod_over_exec(outage, target):
    outage.exec_results[("df", "-Pk", "/var/lib/postgresql/data")] = k8s.ExecResult(
        stdout=(
            "Filesystem     1024-blocks     Used Available Capacity Mounted on\n"
            "/dev/nvme1n1      51290592 46161532   5112676      91% /var/lib/postgresql/data\n"
        )
    )
    result, _lines = run("kubernetes.disk", target)
    assert result.outcome == "failing"
    assert result.evidence["disk_low"]["pod"] == "postgres-0"
    assert result.evidence["disk_low"]["used_ratio"] == pytest.approx(0.9003, abs=1e-4)
    assert result.evidence["disk_low"]["available_bytes"] == 5112676 * 1024
    assert outage.execs == [
        {
            "pod": "postgres-0",
            "container": "backend",
            "command": ["df", "-Pk", "/var/lib/postgresql/data"],
            "stdout": "true",
            "stderr": "true",
            "stdin": "false",
            "tty": "false",
        }
    ]
    result, _ = run("kubernetes.disk", target, {"low_ratio": 0.95})
    assert (result.outcome, result.evidence) == ("warning", {})


# --- actions --------------------------------------------------------------------------


def test_scale_says_from_what_to_what_then_patches_the_scale(outage, target):
    built, _lines = probe("kubernetes.scale", target, {"replicas": 5})
    assert built.plan() == "scale deployment lotolink-backend in lotolink from 3 to 5 replicas"
    assert outage.writes() == []  # the plan only reads
    result = built.run()
    assert result.summary == "deployment lotolink-backend scaled from 3 to 5 replicas"
    (write,) = outage.writes()
    assert (write.method, write.path, write.content_type) == (
        "PATCH",
        f"{BACKEND}/scale",
        "application/merge-patch+json",
    )
    assert write.body == {"spec": {"replicas": 5}}
    assert outage.get("deployments", "lotolink-backend")["spec"]["replicas"] == 5


def test_scale_declares_its_replica_choice():
    scale = get_probe("kubernetes.scale")
    (choice,) = scale.choices({"replicas": 5}, {"oom_killed": {"details": {}}})
    assert (choice.name, choice.minimum, choice.maximum, choice.initial) == ("replicas", 1, 50, 5)
    with pytest.raises(ProbeError, match="between 1 and 50"):
        scale.build(
            Target(name="x", kind="kubernetes", url="http://x"), {"replicas": 51}, timeout=5
        )


def test_restart_patches_the_restarted_at_annotation(outage, target):
    built, _ = probe("kubernetes.restart", target)
    assert built.plan() == (
        "restart deployment lotolink-backend in lotolink: replace its 3 pods one by one "
        "(rollout restart)"
    )
    before = datetime.now(UTC).replace(microsecond=0)
    built.run()
    (write,) = outage.writes()
    assert (write.method, write.path, write.content_type) == (
        "PATCH",
        BACKEND,
        "application/strategic-merge-patch+json",
    )
    stamp = write.body["spec"]["template"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/restartedAt"
    ]
    assert write.body == {
        "spec": {
            "template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}
        }
    }
    when = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= when <= datetime.now(UTC)
    template = outage.get("deployments", "lotolink-backend")["spec"]["template"]
    assert template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] == stamp


def test_rollback_puts_back_the_previous_revisions_template(outage, target):
    built, _ = probe("kubernetes.rollback", target)
    assert built.plan() == (
        "roll back deployment lotolink-backend in lotolink from revision 7 "
        "(registry.lotolink.com/lotolink-backend:1.8.0) to revision 6 "
        "(registry.lotolink.com/lotolink-backend:1.7.3)"
    )
    result = built.run()
    assert result.data == {
        "deployment": "lotolink-backend",
        "from": 7,
        "to": 6,
        "images": ["registry.lotolink.com/lotolink-backend:1.7.3"],
    }
    (write,) = outage.writes()
    assert (write.method, write.path, write.content_type) == (
        "PATCH",
        BACKEND,
        "application/json-patch+json",
    )
    # The revision's template without its pod-template-hash label, as kubectl sends it.
    expected = k8s.template("registry.lotolink.com/lotolink-backend:1.7.3")
    assert write.body == [
        {"op": "replace", "path": "/spec/template", "value": expected},
        {
            "op": "replace",
            "path": "/metadata/annotations",
            "value": {
                "deployment.kubernetes.io/revision": "7",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "kubernetes.io/change-cause": "release 1.7.3",
            },
        },
    ]
    deployed = outage.get("deployments", "lotolink-backend")
    assert deployed["spec"]["template"] == expected


def test_rollback_offers_the_revision_before_the_recent_deploy(outage, target):
    rollback = get_probe("kubernetes.rollback")
    assert rollback.choices({}, {}) == []
    found, _ = run("kubernetes.recent_deploys", target)
    (choice,) = rollback.choices(
        {}, {"recent_deploy": {"details": found.evidence["recent_deploy"]}}
    )
    assert (choice.name, choice.initial) == ("to_revision", 6)
    assert choice.options == ((6, "revision 6 (registry.lotolink.com/lotolink-backend:1.7.3)"),)
    built, _ = probe("kubernetes.rollback", target, {"to_revision": 6})
    assert "to revision 6 (registry.lotolink.com/lotolink-backend:1.7.3)" in built.plan()
    with pytest.raises(
        ProbeError, match=r"revision 4 of lotolink-backend not found \(known: 6, 7\)"
    ):
        probe("kubernetes.rollback", target, {"to_revision": 4})[0].plan()
    assert outage.writes() == []


def test_rollback_without_an_earlier_revision_changes_nothing(kube, target):
    kube.add(k8s.deployment(revision=1))
    kube.add(
        k8s.replica_set(1, "registry.lotolink.com/lotolink-backend:1.8.0", created=k8s.ago(hours=1))
    )
    built, _ = probe("kubernetes.rollback", target)
    with pytest.raises(ProbeError, match="has no previous revision to roll back to"):
        built.plan()
    with pytest.raises(ProbeError, match="no previous revision"):
        built.run()
    assert kube.writes() == []


def test_block_ips_creates_the_network_policy_it_showed(kube, target):
    built, _ = probe(
        "kubernetes.block_ips", target, {"addresses": "203.0.113.7, 198.51.100.0/24 2001:db8::1"}
    )
    plan = built.plan()
    assert kube.writes() == []
    built.run()
    (write,) = kube.writes()
    assert (write.method, write.path) == (
        "POST",
        "/apis/networking.k8s.io/v1/namespaces/lotolink/networkpolicies",
    )
    name = write.body["metadata"]["name"]
    assert write.body == {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": "lotolink",
            "labels": {"app.kubernetes.io/managed-by": "lotoops"},
            "annotations": {"lotoops/blocked": "203.0.113.7/32,198.51.100.0/24,2001:db8::1/128"},
        },
        "spec": {
            "podSelector": {"matchLabels": {"app": "lotolink-backend"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {
                            "ipBlock": {
                                "cidr": "0.0.0.0/0",
                                "except": ["203.0.113.7/32", "198.51.100.0/24"],
                            }
                        },
                        {"ipBlock": {"cidr": "::/0", "except": ["2001:db8::1/128"]}},
                    ]
                }
            ],
        },
    }
    # The plan showed exactly this body.
    assert plan == (
        f"create NetworkPolicy {name} in lotolink denying 203.0.113.7/32, 198.51.100.0/24, "
        f"2001:db8::1/128 to pods app=lotolink-backend: {json.dumps(write.body, sort_keys=True)}"
    )
    # Blocking the same addresses again finds the policy in place.
    result, _ = run(
        "kubernetes.block_ips", target, {"addresses": "2001:db8::1 198.51.100.0/24,203.0.113.7"}
    )
    assert result.summary == f"NetworkPolicy {name} is already in place in lotolink"


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        ("203.0.113.300", "'203.0.113.300' is not an IP address or CIDR block"),
        ("10.0.0.5/24", "has host bits set"),
        ("0.0.0.0/0", "would block every address"),
        ("", "give at least one IP address"),
        ("evil.example.com", "is not an IP address or CIDR block"),
    ],
)
def test_block_ips_refuses_what_is_not_an_address(kube, target, addresses, message):
    with pytest.raises(ProbeError, match=re.escape(message)):
        built, _ = probe("kubernetes.block_ips", target, {"addresses": addresses})
        built.run()
    assert kube.writes() == []


def test_block_ips_asks_for_the_addresses_as_text():
    (choice,) = get_probe("kubernetes.block_ips").choices({}, {})
    assert (choice.name, choice.text) == ("addresses", True)


def test_rotate_secrets_writes_new_values_never_shown_then_restarts(outage, target):
    outage.add(
        k8s.secret(
            "lotolink-secrets",
            {"JWT_SECRET": "old-jwt-value-123", "STRIPE_KEY": "sk_live_old", "DB_PASSWORD": "pw1"},
        )
    )
    version = outage.get("secrets", "lotolink-secrets")["metadata"]["resourceVersion"]
    built, lines = probe("kubernetes.rotate_secrets", target, {"keys": "JWT_SECRET, STRIPE_KEY"})
    plan = built.plan()
    assert plan == (
        "set new random values for JWT_SECRET, STRIPE_KEY in Secret lotolink-secrets "
        "(lotolink), then restart deployment lotolink-backend so its pods read them; "
        "the new values are never shown"
    )
    assert outage.writes() == []
    result = built.run()
    secret_write, restart = outage.writes()
    assert (secret_write.method, secret_write.path, secret_write.content_type) == (
        "PATCH",
        "/api/v1/namespaces/lotolink/secrets/lotolink-secrets",
        "application/merge-patch+json",
    )
    assert secret_write.body["metadata"] == {"resourceVersion": version}
    assert sorted(secret_write.body["data"]) == ["JWT_SECRET", "STRIPE_KEY"]
    new_values = [base64.b64decode(v).decode() for v in secret_write.body["data"].values()]
    assert all(len(v) == 43 for v in new_values)  # 32 random bytes, URL-safe base64
    stored = outage.get("secrets", "lotolink-secrets")["data"]
    assert base64.b64decode(stored["DB_PASSWORD"]).decode() == "pw1"  # untouched
    assert base64.b64decode(stored["JWT_SECRET"]).decode() == new_values[0]
    assert restart.path == BACKEND and "kubectl.kubernetes.io/restartedAt" in json.dumps(
        restart.body
    )
    shown = json.dumps([plan, result.summary, result.data, result.evidence, lines])
    for value in new_values:
        assert value not in shown and base64.b64encode(value.encode()).decode() not in shown
    assert "old-jwt-value-123" not in shown


def test_rotating_a_key_that_does_not_exist_changes_nothing(outage, target):
    outage.add(k8s.secret("lotolink-secrets", {"JWT_SECRET": "old-jwt-value-123"}))
    built, _ = probe("kubernetes.rotate_secrets", target, {"keys": "JWT_SECRET NOPE"})
    with pytest.raises(
        ProbeError, match=r"has no key NOPE \(it has: JWT_SECRET\); nothing was changed"
    ):
        built.plan()
    with pytest.raises(ProbeError, match="has no key NOPE"):
        built.run()
    assert outage.writes() == []
    with pytest.raises(ProbeError, match="name the keys"):
        run("kubernetes.rotate_secrets", target, {"keys": " , "})
    assert outage.writes() == []


def test_exec_streams_the_script_and_judges_its_exit_code(outage, target):
    command = ["./scripts/reconciliation.sh", "--force-check"]
    outage.exec_results[tuple(command)] = k8s.ExecResult(
        stdout="checking 1402 plays\nrepaired 3 plays stuck in pending\n",
        stderr="warning: banca Real slow\n",
        delay=0.05,
    )
    built, lines = probe("kubernetes.exec", target, {"command": command})
    assert built.plan() == (
        "run ./scripts/reconciliation.sh --force-check in pod lotolink-backend-7d9f8c6b5-a "
        "of deployment lotolink-backend in lotolink"
    )
    result = built.run()
    assert result.outcome == "ok" and result.data["exit_code"] == 0
    assert lines == [
        "$ ./scripts/reconciliation.sh --force-check  (in pod lotolink-backend-7d9f8c6b5-a)",
        "checking 1402 plays",
        "repaired 3 plays stuck in pending",
        "[stderr] warning: banca Real slow",
    ]
    assert outage.execs[-1]["command"] == command
    outage.exec_results[tuple(command)] = k8s.ExecResult(
        stdout="checking\n", stderr="reconciliation: lock held by another run\n", exit_code=3
    )
    result, _ = run("kubernetes.exec", target, {"command": command})
    assert result.outcome == "failing"
    assert result.summary == (
        "./scripts/reconciliation.sh --force-check exited with code 3 in pod "
        "lotolink-backend-7d9f8c6b5-a: reconciliation: lock held by another run"
    )
    with pytest.raises(ProbeError, match="executable file not found"):
        run("kubernetes.exec", target, {"command": ["./missing.sh"]})


def test_a_script_running_past_the_steps_timeout_is_timed_out(outage, target):
    from diagnostics.probes.base import ProbeTimeout

    command = ["./scripts/reconciliation.sh", "--force-check"]
    outage.exec_results[tuple(command)] = k8s.ExecResult(
        stdout="".join(f"batch {n}\n" for n in range(40)), delay=0.1
    )
    built, lines = probe("kubernetes.exec", target, {"command": command}, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ProbeTimeout, match="did not finish within 1 s"):
        built.run()
    assert time.monotonic() - started < 3
    assert "batch 0" in lines and "batch 39" not in lines  # streamed while it ran


def test_export_logs_writes_the_last_24_hours_to_a_file(outage, target):
    pod = "lotolink-backend-7d9f8c6b5-a"
    outage.add_logs(pod, "backend", ["from two days ago"], age=timedelta(days=2))
    outage.add_logs(pod, "backend", ["login from 203.0.113.7", f"token={TOKEN} leaked"])
    built, _ = probe("kubernetes.export_logs", target)
    assert built.plan() == (
        "export the last 24 h of logs of 3 pods with app=lotolink-backend in lotolink "
        "(all containers) to a file kept on the incident"
    )
    result = built.run()
    (exported,) = result.files
    path = Path(exported.path)
    try:
        text = path.read_text()
        assert exported.name.startswith("lotolink-backend-logs-") and exported.name.endswith(".txt")
        assert exported.content_type == "text/plain; charset=utf-8"
        assert re.search(rf"\[{pod}/backend\] \S+Z login from 203\.0\.113\.7", text)
        assert "from two days ago" not in text
        assert TOKEN not in text and "token=••• leaked" in text
        assert result.data["lines"] == 2
        logs = [r for r in outage.requests if r.path.endswith("/log")]
        assert {(r.query["sinceSeconds"][0], r.query["timestamps"][0]) for r in logs} == {
            ("86400", "true")
        }
    finally:
        path.unlink()


# --- bad input, refusals, unreachable -------------------------------------------------


def test_a_missing_kubeconfig_is_a_clear_error(kube, tmp_path, settings):
    settings.KUBECONFIG_DIR = tmp_path
    target = Target(
        name="k8s", kind="kubernetes", url="", options={"kubeconfig": str(tmp_path / "none")}
    )
    with pytest.raises(ProbeError, match=r"kubeconfig file .*/none does not exist"):
        run("kubernetes.pods", target)
    assert kube.requests == []


def test_in_cluster_outside_a_pod_is_a_clear_error(kube):
    target = Target(name="k8s", kind="kubernetes", url="", options={"in_cluster": True})
    with pytest.raises(ProbeError, match="cannot use its Kubernetes configuration"):
        run("kubernetes.pods", target)
    target = Target(name="k8s", kind="kubernetes", url="ftp://cluster")
    with pytest.raises(ProbeError, match="give the API server's https:// URL"):
        run("kubernetes.pods", target)


def test_a_kubeconfig_and_its_context_are_used(kube, tmp_path, monkeypatch, settings):
    settings.KUBECONFIG_DIR = tmp_path
    kube.add(k8s.pod("lotolink-backend-1"))
    path = tmp_path / "config"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "other", "cluster": {"server": "http://127.0.0.1:1"}},
                    {"name": "emulated", "cluster": {"server": kube.url}},
                ],
                "users": [{"name": "lotoops", "user": {"token": TOKEN}}],
                "contexts": [
                    {"name": "wrong", "context": {"cluster": "other", "user": "lotoops"}},
                    {"name": "prod", "context": {"cluster": "emulated", "user": "lotoops"}},
                ],
                "current-context": "wrong",
            }
        )
    )
    target = Target(
        name="k8s",
        kind="kubernetes",
        url="",
        options={"kubeconfig": str(path), "context": "prod", "namespace": "lotolink"},
    )
    result, _ = run("kubernetes.pods", target)
    assert result.outcome == "ok"
    target.options["context"] = "nope"
    with pytest.raises(ProbeError, match="cannot use its Kubernetes configuration"):
        run("kubernetes.pods", target)


def test_a_wrong_namespace_is_a_404_and_nothing_changes(outage, target):
    built, _ = probe("kubernetes.scale", target, {"namespace": "lotolnk", "replicas": 5})
    with pytest.raises(
        ProbeError, match=r"deployment lotolink-backend not found in namespace lotolnk \(404\)"
    ):
        built.plan()
    with pytest.raises(ProbeError, match="not found in namespace lotolnk"):
        built.run()
    assert outage.writes() == []


def test_a_forbidden_write_is_the_api_servers_words_and_nothing_changes(outage, target):
    outage.forbidden.add(("patch", "deployments/scale"))
    with pytest.raises(ProbeError) as raised:
        run("kubernetes.scale", target, {"replicas": 5})
    assert str(raised.value) == (
        'lotolink-k8s: forbidden (403): deployments/scale "lotolink-backend" is forbidden: User '
        '"system:serviceaccount:lotolink:lotoops" cannot patch resource "deployments/scale" in '
        'API group "apps" in the namespace "lotolink"'
    )
    assert outage.get("deployments", "lotolink-backend")["spec"]["replicas"] == 3
    outage.forbidden.add(("list", "pods"))
    with pytest.raises(ProbeError, match=r"forbidden \(403\): pods is forbidden"):
        run("kubernetes.pods", target)


def test_a_forbidden_exec_is_refused_in_the_api_servers_words(outage, target):
    outage.forbidden.add(("create", "pods/exec"))
    with pytest.raises(ProbeError) as raised:
        run("kubernetes.disk", target)
    assert not isinstance(raised.value, TransientProbeError)
    assert str(raised.value) == (
        'lotolink-k8s: forbidden (403): pods/exec "postgres-0" is forbidden: User '
        '"system:serviceaccount:lotolink:lotoops" cannot create resource "pods/exec" in API '
        'group "" in the namespace "lotolink"'
    )
    assert outage.execs == []


def test_a_wrong_token_is_a_401_and_the_token_is_never_shown(outage, target, monkeypatch):
    monkeypatch.setenv("LOTOOPS_TARGET_K8S_TOKEN", "wrong-token-abcdef")
    with pytest.raises(ProbeError, match="refused the credentials") as raised:
        run("kubernetes.pods", target)
    assert "wrong-token-abcdef" not in str(raised.value)
    assert outage.requests[-1].path == "/api/v1/namespaces/lotolink/pods"


def test_an_api_server_in_trouble_may_pass(outage, target):
    outage.errors[("GET", "/api/v1/namespaces/lotolink/pods")] = (
        503,
        "ServiceUnavailable",
        "the server is currently unable to handle the request",
    )
    with pytest.raises(TransientProbeError, match="answered 503: the server is currently unable"):
        run("kubernetes.pods", target)


def test_an_api_server_not_listening_may_pass(target):
    target.url = "http://127.0.0.1:1"
    with pytest.raises(TransientProbeError, match="connection refused"):
        run("kubernetes.pods", target)


def test_every_call_passes_a_request_timeout(outage, target, monkeypatch):
    from kubernetes.client import rest

    seen: list[object] = []
    original = rest.RESTClientObject.request

    def spy(self, method, url, headers=None, body=None, post_params=None, _request_timeout=None):
        seen.append(_request_timeout)
        return original(self, method, url, headers, body, post_params, _request_timeout)

    monkeypatch.setattr(rest.RESTClientObject, "request", spy)
    for name in ("kubernetes.pods", "kubernetes.top", "kubernetes.recent_deploys"):
        run(name, target)
    run("kubernetes.get_all", target)
    assert len(seen) >= 9
    assert all(isinstance(t, tuple) and 0 < t[0] <= 10 and 0 < t[1] <= 10 for t in seen)


# --- banca.hmac_match -----------------------------------------------------------------


@pytest.fixture
def banca(kube, monkeypatch):
    monkeypatch.setenv("LOTOOPS_TARGET_K8S_TOKEN", TOKEN)
    kube.add(
        k8s.secret(
            "lotolink-banca-hmac",
            {"la-suerte": "hmac-secret-la-suerte-0001", "real": "hmac-secret-real-0002"},
        )
    )
    target = Target(
        name="banca-la-suerte",
        kind="banca",
        url="https://la-suerte.example/health",
        options={"hmac_key": "la-suerte", "hmac_env": "LOTOOPS_TARGET_HMAC_LA_SUERTE"},
    )
    params = {"kubernetes": {"url": kube.url, "token_env": "LOTOOPS_TARGET_K8S_TOKEN"}}
    return target, params


def test_hmac_match_compares_fingerprints_only(banca, monkeypatch):
    target, params = banca
    monkeypatch.setenv("LOTOOPS_TARGET_HMAC_LA_SUERTE", "hmac-secret-la-suerte-0001")
    result, lines = run("banca.hmac_match", target, params)
    assert result.outcome == "ok" and result.evidence == {}
    expected = hashlib.sha256(b"hmac-secret-la-suerte-0001").hexdigest()[:8]
    assert result.data["configured"] == result.data["registered"] == expected
    assert "hmac-secret-la-suerte-0001" not in json.dumps([result.summary, result.data, lines])


def test_hmac_mismatch_is_found_without_revealing_either_secret(banca, monkeypatch):
    target, params = banca
    monkeypatch.setenv("LOTOOPS_TARGET_HMAC_LA_SUERTE", "hmac-secret-rotated-by-banca")
    result, lines = run("banca.hmac_match", target, params)
    assert result.outcome == "failing"
    assert result.evidence["hmac_mismatch"] == {
        "banca": "banca-la-suerte",
        "key": "la-suerte",
        "env": "LOTOOPS_TARGET_HMAC_LA_SUERTE",
        "configured": hashlib.sha256(b"hmac-secret-la-suerte-0001").hexdigest()[:8],
        "registered": hashlib.sha256(b"hmac-secret-rotated-by-banca").hexdigest()[:8],
    }
    shown = json.dumps([result.summary, result.data, result.evidence, lines])
    assert "hmac-secret-la-suerte-0001" not in shown
    assert "hmac-secret-rotated-by-banca" not in shown


def test_hmac_mismatch_by_a_trailing_newline_is_named(banca, kube, monkeypatch):
    target, params = banca
    kube.add(k8s.secret("lotolink-banca-hmac", {"la-suerte": "hmac-secret-la-suerte-0001\n"}))
    monkeypatch.setenv("LOTOOPS_TARGET_HMAC_LA_SUERTE", "hmac-secret-la-suerte-0001")
    result, _ = run("banca.hmac_match", target, params)
    assert result.outcome == "failing" and result.data["whitespace_only"] is True
    assert result.summary.endswith(
        "(they differ only by surrounding whitespace, e.g. a trailing newline)"
    )


def test_hmac_match_needs_both_secrets(banca, monkeypatch):
    target, params = banca
    with pytest.raises(
        ProbeError, match="environment variable LOTOOPS_TARGET_HMAC_LA_SUERTE is empty"
    ):
        run("banca.hmac_match", target, params)
    monkeypatch.setenv("LOTOOPS_TARGET_HMAC_LA_SUERTE", "x" * 20)
    target.options["hmac_key"] = "nowhere"
    with pytest.raises(ProbeError, match=r"has no key nowhere .*\(it has: la-suerte, real\)"):
        run("banca.hmac_match", target, params)
    with pytest.raises(ProbeError, match="give the cluster"):
        run("banca.hmac_match", target, {})
    with pytest.raises(ProbeError, match="unknown key"):
        probe("banca.hmac_match", target, {"kubernetes": {"server": "x"}})


# --- the runbook ----------------------------------------------------------------------


def runbook_steps() -> list[dict]:
    with RUNBOOK.open("rb") as handle:
        books = tomllib.load(handle)["runbook"]
    return [step for book in books for step in book.get("step", [])]


def test_every_kubernetes_and_banca_probe_of_the_runbook_is_registered():
    from diagnostics.probes.base import parse_params

    named = [s for s in runbook_steps() if s["probe"].startswith(("kubernetes.", "banca."))]
    assert len(named) >= 20
    for step in named:
        cls = get_probe(step["probe"])
        assert cls is not None, f"{step['key']}: {step['probe']} is not registered"
        assert cls.target_kind == step["target_kind"], step["key"]
        assert cls.action == (step["kind"] == "action"), step["key"]
        parse_params(cls.Params, step.get("params", {}))


def test_the_runbook_recommends_the_right_actions():
    steps = {s["key"]: s for s in runbook_steps()}
    assert set(steps["api.scale"]["recommended_by"]) == {"oom_killed", "memory_pressure"}
    assert set(steps["api.restart"]["recommended_by"]) == {"oom_killed", "memory_pressure"}
    assert steps["api.rollback"]["recommended_by"] == ["recent_deploy"]
    assert set(steps["api.pods"]["finds"]) == {"oom_killed", "crash_looping", "not_ready"}
    assert steps["api.top"]["finds"] == ["memory_pressure"]
    assert steps["banca.signature_logs"]["finds"] == ["signature_failures"]
    assert steps["banca.hmac_match"]["finds"] == ["hmac_mismatch"]
    assert steps["db.disk"]["finds"] == ["disk_low"]


# --- through the engine ---------------------------------------------------------------


@pytest.mark.django_db
def test_an_outage_through_the_engine_finds_oom_and_the_confirmed_scale_lands(
    outage, responder, monkeypatch
):
    from diagnostics import services
    from diagnostics.models import CheckRun, RunbookStep, RunStatus
    from diagnostics.seed import seed_runbooks
    from diagnostics.tasks import run_check
    from diagnostics.views import runbook_context
    from incidents.models import EventKind
    from tests import factories

    monkeypatch.setenv("LOTOOPS_TARGET_K8S_TOKEN", TOKEN)
    seed_runbooks()
    Target.objects.create(
        name="lotolink-k8s",
        kind="kubernetes",
        url=outage.url,
        secret_env="LOTOOPS_TARGET_K8S_TOKEN",
    )
    incident = factories.declare(
        actor=responder, category="service_outage", title="API answers 502"
    )
    (run,) = services.request_check(
        incident, RunbookStep.objects.get(key="api.pods"), actor=responder
    )
    run_check.apply(args=(run.pk,))
    run.refresh_from_db()
    assert (run.status, run.outcome) == (RunStatus.SUCCEEDED, "failing")
    assert sorted(run.evidence) == ["crash_looping", "not_ready", "oom_killed"]
    assert "7d9f8c6b5-a  1/1    Running           4         backend: OOMKilled" in run.output
    result = incident.timeline.filter(kind=EventKind.CHECK_RESULT).get()
    assert result.message.startswith("api.pods on lotolink-k8s: 3 pods with app=lotolink-backend")

    class Request:
        user = responder

    context = runbook_context(Request(), incident)
    recommended = {
        item["step"].key: item["because"]
        for book in context["runbooks"]
        for item in book["steps"] or []
        if item["recommended"]
    }
    assert recommended["api.scale"] == ["oom_killed"]
    assert recommended["api.restart"] == ["oom_killed"]

    scale = RunbookStep.objects.get(key="api.scale")
    target = Target.objects.get(name="lotolink-k8s")
    plan = services.plan_action(scale, target, {"replicas": 6})
    assert plan == "scale deployment lotolink-backend in lotolink from 3 to 6 replicas"
    assert outage.writes() == []
    action = services.run_action(
        incident, scale, actor=responder, target=target, params={"replicas": 6}, plan=plan
    )
    run_check.apply(args=(action.pk,))
    action.refresh_from_db()
    assert (action.status, action.summary) == (
        RunStatus.SUCCEEDED,
        "deployment lotolink-backend scaled from 3 to 6 replicas",
    )
    assert outage.get("deployments", "lotolink-backend")["spec"]["replicas"] == 6
    (write,) = outage.writes()
    assert write.body == {"spec": {"replicas": 6}}
    audit = incident.timeline.get(kind=EventKind.ACTION)
    assert audit.message == f"ana confirmed api.scale: {plan}"
    assert TOKEN not in json.dumps(list(CheckRun.objects.values("output", "summary", "result")))
