"""Kubernetes probes: the runbook's pod, log, rollout and resource checks, and the
actions a responder runs on a backend outage (scale, restart, roll back, block
addresses, rotate secrets, run a script, export logs). One small class per
operation, all through the official `kubernetes` client.

The target (kind `kubernetes`): `url` is the API server's address; `secret_env`
names the environment variable holding a bearer token (optional); `options` may
give `kubeconfig` (a file path) and `context`, or `in_cluster: true` (the
service account of the worker's pod), `namespace` (default `lotolink`) and
`verify_tls` (default true). One `ApiClient` is built per run from that (the
client's global configuration is never touched) and every call passes
`_request_timeout` from what is left of the step's timeout.

Step parameters: `namespace` (default: the target's, else `lotolink`),
`deployment` (default `lotolink-backend`) and `selector` (default
`app=<deployment>`).

Outcomes: a finding (evidence) means the runbook's "If: …" condition holds, so the
check is "failing"; "warning" is for what is close to it or worth a look (a
rollout in progress, a recent deploy, Warning events).

Errors a responder can act on (401, 403, 404, a kubeconfig that is missing) are a
ProbeError with the API server's own words; what may pass (5xx, 429, a refused or
dropped connection) a TransientProbeError. Actions check everything before their
one write, so a refusal changes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import queue
import re
import secrets
import shlex
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import urllib3
import websocket
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.stream import stream
from kubernetes.utils.quantity import parse_quantity

from .base import (
    Emit,
    Outcome,
    ParamChoice,
    Probe,
    ProbeError,
    ProbeFile,
    ProbeResult,
    ProbeTimeout,
    TargetLike,
    TransientProbeError,
    register,
)
from .kubeconfig import check_kubeconfig
from .netguard import check_url, guard_pool_manager
from .redact import redact, redact_json

DEFAULT_NAMESPACE = "lotolink"
DEFAULT_DEPLOYMENT = "lotolink-backend"
MAX_CONNECT_TIMEOUT = 10.0
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
# What `kubectl rollout undo` keeps of the deployment's own annotations rather
# than taking the ReplicaSet's (kubectl/pkg/polymorphichelpers/rollback.go).
ANNOTATIONS_TO_SKIP = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
}
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STATUS_CHANNEL = 3  # the exec protocol's error/status channel
LOG_FETCHERS = 4  # pods whose logs are read at once (the client's pool holds more)


# --- the client ------------------------------------------------------------------------


def api_client(
    name: str, url: str, token: str, options: dict[str, Any], *, connect_timeout: float
) -> client.ApiClient:
    """One ApiClient for one run, from a target's URL, token and options.

    `in_cluster` (the worker pod's own API server and service-account token) never
    combines with a URL; a `kubeconfig` must be a file in KUBECONFIG_DIR whose users
    run no command; every other API server's address is checked (netguard) and the
    client connects only to the address checked, never following a redirect."""
    cfg = client.Configuration()
    in_cluster = bool(options.get("in_cluster"))
    if in_cluster and url:
        raise ProbeError(
            f"target {name}: in_cluster uses the worker pod's own API server and token; "
            "it never goes with a URL (clear the URL, or drop in_cluster)"
        )
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=cfg)
        elif options.get("kubeconfig"):
            try:
                path = check_kubeconfig(options["kubeconfig"])
            except ProbeError as exc:
                raise ProbeError(f"target {name}: {exc}") from None
            config.load_kube_config(
                config_file=str(path),
                context=options.get("context") or None,
                client_configuration=cfg,
                persist_config=False,
            )
    except ConfigException as exc:
        raise ProbeError(f"target {name}: cannot use its Kubernetes configuration: {exc}") from None
    if url:
        if not url.startswith(("http://", "https://")):
            raise ProbeError(f"target {name} has URL {url!r}: give the API server's https:// URL")
        cfg.host = url.rstrip("/")
    if (not cfg.host or cfg.host == "http://localhost") and not (
        in_cluster or options.get("kubeconfig")
    ):
        raise ProbeError(f"target {name} gives no API server: set its URL or a kubeconfig")
    if not in_cluster:
        check_url(cfg.host, f"target {name}")
    if token:
        cfg.api_key = {"BearerToken": token}
        cfg.api_key_prefix = {"BearerToken": "Bearer"}
    if "verify_tls" in options:
        cfg.verify_ssl = bool(options["verify_tls"])
    cfg.retries = 0  # the engine retries what may pass, with backoff
    # The exec websocket connects with websocket-client's default timeout (the
    # kubernetes client passes none): give it one.
    websocket.setdefaulttimeout(connect_timeout)
    api = client.ApiClient(configuration=cfg)
    rest = api.rest_client
    if not isinstance(rest.pool_manager, urllib3.ProxyManager):
        # The in-cluster API server's address comes from the pod, not from a target.
        rest.pool_manager = guard_pool_manager(rest.pool_manager, check_addresses=not in_cluster)
    return api


def _status_message(exc: ApiException) -> str:
    """The API server's own sentence from a Status body, else the HTTP reason."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    return str(exc.reason or "no reason given")


@dataclass
class KubeParams:
    namespace: str = ""
    deployment: str = DEFAULT_DEPLOYMENT
    selector: str = ""

    def __post_init__(self) -> None:
        for name in ("namespace", "deployment"):
            value = getattr(self, name)
            if value and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", value):
                raise ProbeError(f"parameter {name} {value!r} is not a Kubernetes name")


class KubeProbe(Probe):
    """What every Kubernetes probe shares: the client, timeouts, errors, output."""

    target_kind = "kubernetes"
    Params = KubeParams

    def __init__(
        self, target: TargetLike, params: Any, *, timeout: float, emit: Emit | None = None
    ) -> None:
        super().__init__(target, params, timeout=timeout, emit=emit)
        self._secrets = [target.secret()]
        raw_emit = self.emit
        self.emit = lambda line: raw_emit(redact(line, self._secrets))
        self._deadline = time.monotonic() + timeout
        self._api: client.ApiClient | None = None

    # --- what subclasses provide --------------------------------------------------

    def inspect(self) -> ProbeResult:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError(f"{self.name} is not an action")

    # --- the probe contract -------------------------------------------------------

    def run(self) -> ProbeResult:
        self._deadline = time.monotonic() + self.timeout
        with self._connected():
            result = self.inspect()
        return ProbeResult(
            result.outcome,
            redact(result.summary, self._secrets),
            redact_json(result.data, self._secrets),
            redact_json(result.evidence, self._secrets),
            result.files,
        )

    def plan(self) -> str:
        if not self.action:
            return super().plan()
        self._deadline = time.monotonic() + self.timeout
        with self._connected():
            return redact(self.describe(), self._secrets)

    # --- connection, calls, errors --------------------------------------------------

    @contextlib.contextmanager
    def _connected(self) -> Iterator[None]:
        options = dict(self.target.options or {})
        self._api = api_client(
            self.target.name,
            self.target.url,
            self.target.secret(),
            options,
            connect_timeout=self.connect_timeout,
        )
        try:
            yield
        except ProbeError as exc:
            clean = redact(str(exc), self._secrets)
            if clean != str(exc):
                raise type(exc)(clean) from None
            raise
        finally:
            self._api.close()
            self._api = None

    @property
    def api(self) -> client.ApiClient:
        assert self._api is not None, "use the API inside run() or plan()"
        return self._api

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @property
    def connect_timeout(self) -> float:
        return max(0.5, min(MAX_CONNECT_TIMEOUT, self.timeout / 3))

    def time_left(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def rt(self) -> tuple[float, float]:
        """`_request_timeout` for the next call: connect, then read within the budget."""
        left = self.time_left()
        if left <= 0:
            raise ProbeTimeout(f"{self.target.name}: no result within {self.timeout:g} s")
        return (min(self.connect_timeout, left), max(0.1, left))

    @property
    def namespace(self) -> str:
        return (
            getattr(self.params, "namespace", "")
            or (self.target.options or {}).get("namespace")
            or DEFAULT_NAMESPACE
        )

    @property
    def selector(self) -> str:
        return self.params.selector or f"app={self.params.deployment}"

    @contextlib.contextmanager
    def call(self, what: str) -> Iterator[None]:
        """Turn the client's exceptions into errors a responder understands;
        `what` names the object asked for ("deployment lotolink-backend")."""
        where = f"{self.target.name}"
        try:
            yield
        except ApiException as exc:
            raise self._api_error(exc, what) from None
        except urllib3.exceptions.ReadTimeoutError:
            raise ProbeTimeout(
                f"{where}: the API server did not answer within {self.timeout:g} s ({what})"
            ) from None
        except urllib3.exceptions.MaxRetryError as exc:
            raise _connection_error(where, self.target.url, exc.reason) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _connection_error(where, self.target.url, exc) from None

    def _api_error(self, exc: ApiException, what: str) -> ProbeError:
        where = self.target.name
        message = _status_message(exc)
        status = exc.status or 0
        if status == 401:
            return ProbeError(
                f"{where}: the API server refused the credentials (401 Unauthorized): "
                "check the token in the target's environment variable"
            )
        if status == 403:
            return ProbeError(f"{where}: forbidden (403): {message}")
        if status == 404:
            return ProbeError(f"{where}: {what} not found in namespace {self.namespace} (404)")
        if status == 409:
            return ProbeError(f"{where}: conflict (409): {message}")
        if status in (400, 422):
            return ProbeError(f"{where}: the API server refused the request ({status}): {message}")
        if status == 429 or status >= 500:
            return TransientProbeError(f"{where}: the API server answered {status}: {message}")
        if status == 0:  # the websocket transport's errors (exec)
            return self._handshake_error(message, what)
        return ProbeError(f"{where}: {what}: {status} {message}")

    def _handshake_error(self, text: str, what: str) -> ProbeError:
        """websocket-client's "Handshake status 403 Forbidden -+-+- {headers} -+-+-
        {body}": the status and the API server's Status message, not the headers."""
        found = re.match(r"Handshake status (\d{3})", text)
        if not found:
            return TransientProbeError(f"{self.target.name}: {what}: {text[:300]}")
        body = text.rsplit(" -+-+- ", 1)[-1]
        with contextlib.suppress(ValueError):
            body = json.loads(body).get("message", body)
        return self._api_error(ApiException(status=int(found[1]), reason=str(body)[:300]), what)

    # --- shared reads ------------------------------------------------------------------

    def pods(self, selector: str | None = None) -> list[client.V1Pod]:
        label = self.selector if selector is None else selector
        with self.call(f"pods with {label or 'any label'}"):
            found = self.core.list_namespaced_pod(
                self.namespace, label_selector=label or None, _request_timeout=self.rt()
            )
        return sorted(found.items, key=lambda p: p.metadata.name)

    def deployment(self) -> client.V1Deployment:
        name = self.params.deployment
        with self.call(f"deployment {name}"):
            return self.apps.read_namespaced_deployment(
                name, self.namespace, _request_timeout=self.rt()
            )

    def replica_sets(self, deployment: client.V1Deployment) -> list[client.V1ReplicaSet]:
        """The deployment's ReplicaSets (owned by it), oldest revision first."""
        labels = deployment.spec.selector.match_labels or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        with self.call(f"ReplicaSets of deployment {deployment.metadata.name}"):
            found = self.apps.list_namespaced_replica_set(
                self.namespace, label_selector=selector or None, _request_timeout=self.rt()
            )
        owned = [
            rs
            for rs in found.items
            if any(o.uid == deployment.metadata.uid for o in rs.metadata.owner_references or [])
        ]
        return sorted(owned, key=_revision)

    def log_pod(self) -> client.V1Pod:
        """The pod whose logs to follow: a ready one, else a running one (in an
        outage none may be ready), else the first."""
        pods = self.pods()
        if not pods:
            raise ProbeError(f"no pods with {self.selector} in namespace {self.namespace}")
        running = [p for p in pods if p.status.phase == "Running"]
        return next((p for p in running if _pod_ready(p)), (running or pods)[0])

    def ready_pod(self, selector: str | None = None) -> client.V1Pod:
        """A running, ready pod to exec in (the first by name), else a clear error."""
        pods = self.pods(selector)
        label = self.selector if selector is None else selector
        if not pods:
            raise ProbeError(f"no pods with {label} in namespace {self.namespace}")
        for pod in pods:
            if pod.status.phase == "Running" and _pod_ready(pod):
                return pod
        raise ProbeError(f"none of the {len(pods)} pods with {label} is running and ready")

    def exec(
        self,
        pod: str,
        command: list[str],
        *,
        container: str = "",
        on_line: Callable[[str], None] | None = None,
    ) -> tuple[int, str, str]:
        """Run `command` in the pod over the exec websocket (v4.channel.k8s.io);
        stdout and stderr lines go to `on_line` as they arrive. Returns the exit
        code, stdout and stderr."""
        what = f"exec in pod {pod}"
        with self.call(what):
            ws = stream(
                self.core.connect_get_namespaced_pod_exec,
                pod,
                self.namespace,
                command=command,
                container=container or None,
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
                _preload_content=False,
                _request_timeout=self.rt(),
            )
        out: list[str] = []
        err: list[str] = []
        partial = {1: "", 2: ""}

        def take(channel: int, text: str, into: list[str]) -> None:
            into.append(text)
            lines = (partial[channel] + text).split("\n")
            partial[channel] = lines.pop()
            for line in lines:
                if on_line:
                    on_line(line if channel == 1 else f"[stderr] {line}")

        try:
            while ws.is_open():
                left = self.time_left()
                if left <= 0:
                    raise ProbeTimeout(
                        f"{self.target.name}: {shlex.join(command)} did not finish within "
                        f"{self.timeout:g} s (left running in pod {pod})"
                    )
                ws.update(timeout=min(1.0, left))
                if ws.peek_stdout():
                    take(1, ws.read_stdout(), out)
                if ws.peek_stderr():
                    take(2, ws.read_stderr(), err)
            if ws.peek_stdout():
                take(1, ws.read_stdout(), out)
            if ws.peek_stderr():
                take(2, ws.read_stderr(), err)
            for channel, rest in partial.items():
                if rest and on_line:
                    on_line(rest if channel == 1 else f"[stderr] {rest}")
            status = ws.read_channel(STATUS_CHANNEL)
        except (websocket.WebSocketException, OSError) as exc:
            raise TransientProbeError(f"{self.target.name}: {what} was cut: {exc}") from None
        finally:
            # websocket-client waits up to 3 s for the server's close frame by
            # default; a command we gave up on must not hold the run that long.
            ws.close(timeout=0.5)
        return _exit_code(status, what), "".join(out), "".join(err)

    def read_logs(
        self, wanted: list[tuple[str, str | None]], *, tolerate: bool = False, **query: Any
    ) -> list[str | ProbeError]:
        """The logs of (pod, container) pairs, fetched in parallel (one request
        each, at most LOG_FETCHERS at once), in the order asked. With `tolerate`,
        a pod the API server has no logs for (400: its container is waiting to
        start, no previous container) gives its error in place of its text."""

        def one(pod: str, container: str | None) -> str | ProbeError:
            what = f"logs of pod {pod}" + (f" container {container}" if container else "")
            try:
                with self.call(what):
                    return self.core.read_namespaced_pod_log(
                        pod,
                        self.namespace,
                        container=container,
                        _request_timeout=self.rt(),
                        **query,
                    )
            except ProbeError as exc:
                if tolerate and "(400)" in str(exc):
                    return exc
                raise

        if len(wanted) <= 1:
            return [one(pod, container) for pod, container in wanted]
        with ThreadPoolExecutor(max_workers=min(LOG_FETCHERS, len(wanted))) as pool:
            futures = [pool.submit(one, pod, container) for pod, container in wanted]
            return [f.result() for f in futures]

    # --- output ----------------------------------------------------------------------

    def emit_table(self, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        cells = [[str("" if v is None else v) for v in row] for row in rows]
        widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

        def line(values: Sequence[str]) -> str:
            return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

        self.emit(line(headers))
        for row in cells:
            self.emit(line(row))


class KubeAction(KubeProbe):
    action = True


def _connection_error(where: str, url: str, exc: BaseException | None) -> ProbeError:
    text = str(exc or "connection failed")
    if isinstance(exc, urllib3.exceptions.SSLError):
        return ProbeError(f"{where}: TLS with the API server at {url} failed: {text}")
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError) and not isinstance(
        exc,
        urllib3.exceptions.NewConnectionError,  # a subclass, for a refused connection
    ):
        return TransientProbeError(f"{where}: no connection to the API server at {url} in time")
    if "refused" in text.lower():
        return TransientProbeError(
            f"{where}: connection refused by the API server at {url} (nothing listening)"
        )
    return TransientProbeError(f"{where}: cannot reach the API server at {url}: {text}")


def _exit_code(status: str, what: str) -> int:
    """The exit code from the exec protocol's status channel (a metav1.Status)."""
    if not status:
        raise TransientProbeError(f"{what}: the connection closed without an exit status")
    try:
        body = json.loads(status)
    except ValueError:
        raise ProbeError(f"{what}: unreadable exit status {status[:200]!r}") from None
    if body.get("status") == "Success":
        return 0
    for cause in (body.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", "1"))
    raise ProbeError(f"{what} failed: {body.get('message') or body}")


# --- small readers of objects ------------------------------------------------------------


def _revision(rs: client.V1ReplicaSet) -> int:
    try:
        return int((rs.metadata.annotations or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _images(template: client.V1PodTemplateSpec) -> list[str]:
    return [c.image for c in template.spec.containers]


def default_container(pod: client.V1Pod) -> str:
    """The container `kubectl logs` picks when none is named: the one the
    kubectl.kubernetes.io/default-container annotation names, else the first."""
    names = [c.name for c in pod.spec.containers]
    named = (pod.metadata.annotations or {}).get("kubectl.kubernetes.io/default-container")
    return named if named in names else names[0]


def _pod_ready(pod: client.V1Pod) -> bool:
    for condition in pod.status.conditions or []:
        if condition.type == "Ready":
            return condition.status == "True"
    return False


def _age(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "?"
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 120:
        return f"{max(0, seconds)}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _iso(when: datetime | None) -> str | None:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None


def _container_state(state: client.V1ContainerState | None) -> str:
    if state is None:
        return "-"
    if state.running:
        return "Running"
    if state.waiting:
        return state.waiting.reason or "Waiting"
    if state.terminated:
        return f"Terminated: {state.terminated.reason or 'exit'} ({state.terminated.exit_code})"
    return "-"


# --- diagnostics --------------------------------------------------------------------------


@register
class Pods(KubeProbe):
    """api.pods: the backend's pods with restarts, last termination reasons and
    what is wrong: OOMKilled containers, CrashLoopBackOff, pods not ready."""

    name = "kubernetes.pods"

    def inspect(self) -> ProbeResult:
        pods = self.pods()
        now = datetime.now(UTC)
        rows: list[tuple[Any, ...]] = []
        oom: list[dict[str, Any]] = []
        crash: list[dict[str, Any]] = []
        not_ready: list[str] = []
        listed: list[dict[str, Any]] = []
        for pod in pods:
            statuses = pod.status.container_statuses or []
            restarts = sum(s.restart_count or 0 for s in statuses)
            ready = sum(1 for s in statuses if s.ready)
            reasons: list[str] = []
            state = pod.status.phase or "Unknown"
            for s in statuses:
                for where, st in (("last", s.last_state), ("now", s.state)):
                    terminated = st.terminated if st else None
                    if terminated and terminated.reason:
                        reasons.append(f"{s.name}: {terminated.reason}")
                        if terminated.reason == "OOMKilled":
                            oom.append(
                                {
                                    "pod": pod.metadata.name,
                                    "container": s.name,
                                    "finished_at": _iso(terminated.finished_at),
                                    "minutes_ago": round(
                                        (now - terminated.finished_at).total_seconds() / 60, 1
                                    )
                                    if terminated.finished_at
                                    else None,
                                    "state": where,
                                }
                            )
                waiting = s.state.waiting if s.state else None
                if waiting and waiting.reason:
                    state = waiting.reason
                    if waiting.reason == "CrashLoopBackOff":
                        crash.append(
                            {
                                "pod": pod.metadata.name,
                                "container": s.name,
                                "restarts": s.restart_count or 0,
                            }
                        )
            if pod.status.phase != "Succeeded" and not _pod_ready(pod):
                not_ready.append(pod.metadata.name)
            rows.append(
                (
                    pod.metadata.name,
                    f"{ready}/{len(pod.spec.containers)}",
                    state,
                    restarts,
                    ", ".join(dict.fromkeys(reasons)) or "-",
                    _age(pod.metadata.creation_timestamp, now),
                )
            )
            listed.append(
                {
                    "name": pod.metadata.name,
                    "phase": pod.status.phase,
                    "ready": _pod_ready(pod),
                    "restarts": restarts,
                    "last_termination": list(dict.fromkeys(reasons)),
                    "node": pod.spec.node_name,
                }
            )
        where = f"{self.selector} in {self.namespace}"
        data = {"namespace": self.namespace, "selector": self.selector, "pods": listed}
        if not pods:
            self.emit(f"No pods with {where}.")
            return ProbeResult(Outcome.FAILING, f"no pods with {where}", data=data)
        self.emit_table(["NAME", "READY", "STATUS", "RESTARTS", "LAST TERMINATION", "AGE"], rows)
        evidence: dict[str, Any] = {}
        found: list[str] = []
        if oom:
            evidence["oom_killed"] = {"containers": oom}
            found.append(f"{len({o['pod'] for o in oom})} OOMKilled")
        if crash:
            evidence["crash_looping"] = {"containers": crash}
            found.append(f"{len({c['pod'] for c in crash})} in CrashLoopBackOff")
        if not_ready:
            evidence["not_ready"] = {"pods": not_ready}
            found.append(f"{len(not_ready)} not ready")
        summary = f"{len(pods)} pods with {where}"
        if found:
            return ProbeResult(
                Outcome.FAILING, f"{summary}: {', '.join(found)}", data=data, evidence=evidence
            )
        return ProbeResult(Outcome.OK, f"{summary}, all ready", data=data)


@dataclass
class LogsParams(KubeParams):
    tail: int = 100
    pattern: str = ""  # a regular expression: only matching lines, with counts
    container: str = ""
    since_minutes: int = 0
    previous: bool = False  # the previous (crashed) container's logs, like --previous
    evidence: str = ""  # the evidence key reported when the pattern matches
    threshold: int = 1  # matches needed for the evidence
    max_lines: int = 500  # lines shown at most

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.tail <= 100_000:
            raise ProbeError("parameter tail must be between 1 and 100000")
        if self.since_minutes < 0 or self.threshold < 1 or self.max_lines < 1:
            raise ProbeError("parameters since_minutes, threshold and max_lines must be positive")
        if self.evidence and not self.pattern:
            raise ProbeError("parameter evidence needs a pattern")
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ProbeError(
                f"parameter pattern is not a valid regular expression: {exc}"
            ) from None


@register
class Logs(KubeProbe):
    """api.logs, ref.logs_tail and the log greps (pay.webhook_logs,
    banca.request_logs, banca.signature_logs): the last `tail` lines of each
    backend pod, or only the lines matching `pattern` with their counts."""

    name = "kubernetes.logs"
    Params = LogsParams

    def inspect(self) -> ProbeResult:
        p: LogsParams = self.params
        pods = self.pods()
        if not pods:
            raise ProbeError(f"no pods with {self.selector} in namespace {self.namespace}")
        regex = re.compile(p.pattern) if p.pattern else None
        counts: dict[str, int] = {}
        shown = 0
        matched: list[str] = []
        texts = self.read_logs(
            [(pod.metadata.name, p.container or default_container(pod)) for pod in pods],
            tolerate=True,
            tail_lines=p.tail,
            since_seconds=p.since_minutes * 60 or None,
            previous=p.previous or None,
        )
        unavailable: dict[str, str] = {}
        for pod, text in zip(pods, texts, strict=True):
            name = pod.metadata.name
            if isinstance(text, ProbeError):
                unavailable[name] = str(text).split("(400): ", 1)[-1]
                self.emit(f"[{name}] no logs: {unavailable[name]}")
                continue
            lines = text.splitlines()
            if regex:
                lines = [line for line in lines if regex.search(line)]
                counts[name] = len(lines)
                matched += lines
            else:
                counts[name] = len(lines)
            for line in lines:
                if shown < p.max_lines:
                    self.emit(f"[{name}] {line}" if len(pods) > 1 else line)
                    shown += 1
        total = sum(counts.values())
        data: dict[str, Any] = {"pods": counts, "lines": total, "tail": p.tail}
        if unavailable:
            data["unavailable"] = unavailable
        if not counts:
            first = next(iter(unavailable.values()))
            return ProbeResult(
                Outcome.WARNING, f"no logs available from the {len(pods)} pods: {first}", data
            )
        if not regex:
            return ProbeResult(
                Outcome.OK, f"{total} log lines from {len(pods)} pods (last {p.tail} each)", data
            )
        self.emit(
            f"{total} lines match /{p.pattern}/ in the last {p.tail} lines of each pod: "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
        data.update(pattern=p.pattern, matches=total, sample=matched[-20:])
        summary = f"{total} lines match /{p.pattern}/ in {len(pods)} pods"
        if p.evidence and total >= p.threshold:
            evidence = {p.evidence: {"matches": total, "pods": counts, "sample": matched[-5:]}}
            return ProbeResult(Outcome.FAILING, summary, data, evidence)
        return ProbeResult(Outcome.OK, summary, data)


@register
class RolloutStatus(KubeProbe):
    """api.rollout_status: what `kubectl rollout status` says, without waiting."""

    name = "kubernetes.rollout_status"

    def inspect(self) -> ProbeResult:
        d = self.deployment()
        name = d.metadata.name
        want = d.spec.replicas if d.spec.replicas is not None else 1
        st = d.status
        updated, ready = st.updated_replicas or 0, st.ready_replicas or 0
        available, total = st.available_replicas or 0, st.replicas or 0
        data = {
            "deployment": name,
            "replicas": want,
            "updated": updated,
            "ready": ready,
            "available": available,
            "total": total,
            "generation": d.metadata.generation,
            "observed_generation": st.observed_generation,
            "images": _images(d.spec.template),
            "revision": (d.metadata.annotations or {}).get(REVISION),
        }
        self.emit_table(
            ["DESIRED", "UPDATED", "READY", "AVAILABLE", "TOTAL"],
            [(want, updated, ready, available, total)],
        )
        for c in st.conditions or []:
            self.emit(f"{c.type}={c.status} {c.reason or ''}: {c.message or ''}".rstrip(": "))
        progressing = next((c for c in st.conditions or [] if c.type == "Progressing"), None)
        if progressing and progressing.reason == "ProgressDeadlineExceeded":
            return ProbeResult(
                Outcome.FAILING, f'deployment "{name}" exceeded its progress deadline', data
            )
        if d.spec.paused:
            return ProbeResult(Outcome.WARNING, f'deployment "{name}" is paused', data)
        if (st.observed_generation or 0) < (d.metadata.generation or 0):
            message = f'waiting for deployment "{name}" spec update to be observed'
        elif updated < want:
            message = (
                f'waiting for deployment "{name}" rollout to finish: '
                f"{updated} out of {want} new replicas have been updated"
            )
        elif total > updated:
            message = (
                f'waiting for deployment "{name}" rollout to finish: '
                f"{total - updated} old replicas are pending termination"
            )
        elif available < updated:
            message = (
                f'waiting for deployment "{name}" rollout to finish: '
                f"{available} of {updated} updated replicas are available"
            )
        else:
            self.emit(f'deployment "{name}" successfully rolled out')
            return ProbeResult(Outcome.OK, f'deployment "{name}" successfully rolled out', data)
        self.emit(message)
        return ProbeResult(Outcome.WARNING, message, data)


@dataclass
class RecentDeploysParams(KubeParams):
    window_minutes: int = 60  # a revision created within this window is "recent"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.window_minutes < 1:
            raise ProbeError("parameter window_minutes must be at least 1")


@register
class RecentDeploys(KubeProbe):
    """init.recent_deploys: the deployment's revisions (its ReplicaSets) with
    creation times and images, like `kubectl rollout history`; a revision
    within the window is the `recent_deploy` that api.rollback undoes.

    "Deployed" is the ReplicaSet's creation time: a rollback to an older
    ReplicaSet gives it a new revision number but keeps its old creation time,
    so a rollback itself is not reported as a recent deploy."""

    name = "kubernetes.recent_deploys"
    Params = RecentDeploysParams

    def inspect(self) -> ProbeResult:
        p: RecentDeploysParams = self.params
        d = self.deployment()
        sets = self.replica_sets(d)
        now = datetime.now(UTC)
        current = (d.metadata.annotations or {}).get(REVISION)
        revisions = [
            {
                "revision": _revision(rs),
                "created": _iso(rs.metadata.creation_timestamp),
                "images": _images(rs.spec.template),
                "replicas": rs.status.replicas or 0,
                "change_cause": (rs.metadata.annotations or {}).get("kubernetes.io/change-cause"),
            }
            for rs in sets
        ]
        self.emit_table(
            ["REVISION", "CREATED", "AGE", "REPLICAS", "IMAGES", "CHANGE-CAUSE"],
            [
                (
                    r["revision"],
                    r["created"],
                    _age(rs.metadata.creation_timestamp, now),
                    r["replicas"],
                    ", ".join(r["images"]),
                    r["change_cause"] or "-",
                )
                for r, rs in zip(revisions, sets, strict=True)
            ],
        )
        data = {"deployment": d.metadata.name, "current_revision": current, "revisions": revisions}
        if not sets:
            return ProbeResult(Outcome.OK, f"no revisions of {d.metadata.name} found", data)
        newest = sets[-1]
        created = newest.metadata.creation_timestamp
        minutes = (now - created).total_seconds() / 60 if created else None
        summary = (
            f"revision {_revision(newest)} of {d.metadata.name} "
            f"({', '.join(_images(newest.spec.template))}) created {_age(created, now)} ago"
        )
        if minutes is not None and minutes <= p.window_minutes:
            previous = sets[-2] if len(sets) > 1 else None
            evidence = {
                "recent_deploy": {
                    "deployment": d.metadata.name,
                    "revision": _revision(newest),
                    "images": _images(newest.spec.template),
                    "created": _iso(created),
                    "minutes_ago": round(minutes, 1),
                    "previous_revision": _revision(previous) if previous else None,
                    "previous_images": _images(previous.spec.template) if previous else [],
                }
            }
            return ProbeResult(
                Outcome.WARNING,
                f"{summary}: within the last {p.window_minutes} min",
                data,
                evidence,
            )
        return ProbeResult(Outcome.OK, summary, data)


@dataclass
class TopParams(KubeParams):
    memory_ratio: float = 0.9  # memory use at or above this share of the limit is pressure

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.memory_ratio <= 1:
            raise ProbeError("parameter memory_ratio must be above 0 and at most 1")


@register
class Top(KubeProbe):
    """api.top: CPU and memory of each backend container from metrics.k8s.io,
    against its limits; `memory_pressure` when a container is near its limit."""

    name = "kubernetes.top"
    Params = TopParams

    def inspect(self) -> ProbeResult:
        p: TopParams = self.params
        custom = client.CustomObjectsApi(self.api)
        try:
            with self.call("pod metrics"):
                metrics = custom.list_namespaced_custom_object(
                    "metrics.k8s.io",
                    "v1beta1",
                    self.namespace,
                    "pods",
                    label_selector=self.selector or None,
                    _request_timeout=self.rt(),
                )
        except ProbeError as exc:
            if "(404)" not in str(exc):
                raise
            summary = (
                "metrics-server is not installed: the metrics.k8s.io API is not served, "
                "so pod CPU and memory cannot be read"
            )
            self.emit(summary)
            return ProbeResult(Outcome.WARNING, summary, {"metrics_available": False})
        limits: dict[tuple[str, str], Any] = {}
        for pod in self.pods():
            for c in pod.spec.containers:
                resources = c.resources.limits if c.resources else None
                limits[(pod.metadata.name, c.name)] = (resources or {}).get("memory")
        rows: list[tuple[Any, ...]] = []
        usage: list[dict[str, Any]] = []
        pressure: list[dict[str, Any]] = []
        for item in metrics.get("items", []):
            pod_name = item["metadata"]["name"]
            for c in item.get("containers", []):
                cpu_m = float(parse_quantity(c["usage"].get("cpu", "0"))) * 1000
                mem = int(parse_quantity(c["usage"].get("memory", "0")))
                limit_text = limits.get((pod_name, c["name"]))
                limit = int(parse_quantity(limit_text)) if limit_text else None
                ratio = mem / limit if limit else None
                entry = {
                    "pod": pod_name,
                    "container": c["name"],
                    "cpu_millicores": round(cpu_m),
                    "memory_bytes": mem,
                    "memory_limit_bytes": limit,
                    "memory_ratio": round(ratio, 4) if ratio is not None else None,
                }
                usage.append(entry)
                if ratio is not None and ratio >= p.memory_ratio:
                    pressure.append(entry)
                rows.append(
                    (
                        pod_name,
                        c["name"],
                        f"{cpu_m:.0f}m",
                        f"{mem / 2**20:.0f}Mi",
                        f"{limit / 2**20:.0f}Mi" if limit else "none",
                        f"{ratio:.0%}" if ratio is not None else "-",
                    )
                )
        data = {"metrics_available": True, "containers": usage}
        if not rows:
            self.emit(f"No metrics for pods with {self.selector} in {self.namespace}.")
            return ProbeResult(Outcome.WARNING, f"no metrics for pods with {self.selector}", data)
        self.emit_table(["POD", "CONTAINER", "CPU", "MEMORY", "LIMIT", "OF LIMIT"], rows)
        if pressure:
            worst = max(pressure, key=lambda e: e["memory_ratio"])
            return ProbeResult(
                Outcome.FAILING,
                f"{len(pressure)} containers at or above {p.memory_ratio:.0%} of their memory "
                f"limit (worst {worst['pod']} at {worst['memory_ratio']:.0%})",
                data,
                {"memory_pressure": {"containers": pressure, "ratio": p.memory_ratio}},
            )
        return ProbeResult(Outcome.OK, f"{len(rows)} containers, memory within limits", data)


@dataclass
class DescribePodParams(KubeParams):
    pod: str = ""  # default: the first pod that is not ready, else the first pod


@register
class DescribePod(KubeProbe):
    """ref.describe_pod: a pod's conditions, container states and events."""

    name = "kubernetes.describe_pod"
    Params = DescribePodParams

    def inspect(self) -> ProbeResult:
        p: DescribePodParams = self.params
        if p.pod:
            with self.call(f"pod {p.pod}"):
                pod = self.core.read_namespaced_pod(
                    p.pod, self.namespace, _request_timeout=self.rt()
                )
        else:
            pods = self.pods()
            if not pods:
                raise ProbeError(f"no pods with {self.selector} in namespace {self.namespace}")
            pod = next((x for x in pods if not _pod_ready(x)), pods[0])
        name = pod.metadata.name
        self.emit(f"Name:       {name}")
        self.emit(f"Namespace:  {pod.metadata.namespace}")
        self.emit(f"Node:       {pod.spec.node_name or '-'}")
        self.emit(f"Status:     {pod.status.phase}")
        self.emit("Conditions:")
        conditions = [
            {"type": c.type, "status": c.status, "reason": c.reason}
            for c in pod.status.conditions or []
        ]
        for c in conditions:
            self.emit(f"  {c['type']:<16} {c['status']}  {c['reason'] or ''}".rstrip())
        self.emit("Containers:")
        containers = []
        for s in pod.status.container_statuses or []:
            entry = {
                "name": s.name,
                "image": s.image,
                "ready": s.ready,
                "restarts": s.restart_count,
                "state": _container_state(s.state),
                "last_state": _container_state(s.last_state),
            }
            containers.append(entry)
            self.emit(f"  {s.name}: {entry['image']}")
            self.emit(f"    State:       {entry['state']}")
            self.emit(f"    Last State:  {entry['last_state']}")
            self.emit(f"    Ready: {s.ready}  Restarts: {s.restart_count}")
        with self.call(f"events of pod {name}"):
            events = self.core.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.name={name},involvedObject.kind=Pod",
                _request_timeout=self.rt(),
            ).items
        events.sort(key=_event_time)
        self.emit("Events:")
        for e in events:
            self.emit(f"  {e.type:<8} {e.reason:<16} x{e.count or 1}  {e.message}")
        data = {
            "pod": name,
            "phase": pod.status.phase,
            "conditions": conditions,
            "containers": containers,
            "events": [
                {"type": e.type, "reason": e.reason, "message": e.message, "count": e.count}
                for e in events
            ],
        }
        warnings = sum(1 for e in events if e.type == "Warning")
        outcome = Outcome.OK if _pod_ready(pod) else Outcome.WARNING
        return ProbeResult(
            outcome,
            f"pod {name}: {pod.status.phase}, {'ready' if _pod_ready(pod) else 'not ready'}, "
            f"{warnings} warning events",
            data,
        )


def _event_time(e: client.CoreV1Event) -> datetime:
    return (
        e.last_timestamp
        or e.event_time
        or e.first_timestamp
        or e.metadata.creation_timestamp
        or datetime.min.replace(tzinfo=UTC)
    )


@dataclass
class EventsParams(KubeParams):
    limit: int = 50  # the most recent events shown


@register
class Events(KubeProbe):
    """ref.events: the namespace's events sorted by time (the last `limit`)."""

    name = "kubernetes.events"
    Params = EventsParams

    def inspect(self) -> ProbeResult:
        with self.call("events"):
            events = self.core.list_namespaced_event(
                self.namespace, _request_timeout=self.rt()
            ).items
        events.sort(key=_event_time)
        shown = events[-self.params.limit :]
        now = datetime.now(UTC)
        self.emit_table(
            ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
            [
                (
                    _age(_event_time(e), now),
                    e.type,
                    e.reason,
                    f"{(e.involved_object.kind or '').lower()}/{e.involved_object.name}",
                    e.message,
                )
                for e in shown
            ],
        )
        warnings = [e for e in events if e.type == "Warning"]
        data = {
            "events": [
                {
                    "time": _iso(_event_time(e)),
                    "type": e.type,
                    "reason": e.reason,
                    "object": f"{e.involved_object.kind}/{e.involved_object.name}",
                    "message": e.message,
                }
                for e in shown
            ],
            "warnings": len(warnings),
        }
        summary = f"{len(events)} events in {self.namespace}, {len(warnings)} warnings"
        return ProbeResult(Outcome.WARNING if warnings else Outcome.OK, summary, data)


@register
class GetAll(KubeProbe):
    """ref.get_all: pods, services, deployments, replica sets and stateful sets."""

    name = "kubernetes.get_all"

    def inspect(self) -> ProbeResult:
        ns, rt = self.namespace, self.rt
        counts: dict[str, int] = {}
        with self.call("pods"):
            pods = self.core.list_namespaced_pod(ns, _request_timeout=rt()).items
        self._section(
            "pod",
            counts,
            [
                (
                    p.metadata.name,
                    f"{sum(1 for s in p.status.container_statuses or [] if s.ready)}"
                    f"/{len(p.spec.containers)}",
                    p.status.phase,
                    sum(s.restart_count or 0 for s in p.status.container_statuses or []),
                )
                for p in pods
            ],
            ["READY", "STATUS", "RESTARTS"],
        )
        with self.call("services"):
            services = self.core.list_namespaced_service(ns, _request_timeout=rt()).items
        self._section(
            "service",
            counts,
            [
                (
                    s.metadata.name,
                    s.spec.type,
                    s.spec.cluster_ip,
                    ",".join(f"{x.port}/{x.protocol}" for x in s.spec.ports or []),
                )
                for s in services
            ],
            ["TYPE", "CLUSTER-IP", "PORTS"],
        )
        with self.call("deployments"):
            deployments = self.apps.list_namespaced_deployment(ns, _request_timeout=rt()).items
        self._section(
            "deployment.apps",
            counts,
            [
                (
                    d.metadata.name,
                    f"{d.status.ready_replicas or 0}/{d.spec.replicas}",
                    d.status.updated_replicas or 0,
                    d.status.available_replicas or 0,
                )
                for d in deployments
            ],
            ["READY", "UP-TO-DATE", "AVAILABLE"],
        )
        with self.call("replica sets"):
            sets = self.apps.list_namespaced_replica_set(ns, _request_timeout=rt()).items
        self._section(
            "replicaset.apps",
            counts,
            [
                (
                    r.metadata.name,
                    r.spec.replicas,
                    r.status.replicas or 0,
                    r.status.ready_replicas or 0,
                )
                for r in sets
            ],
            ["DESIRED", "CURRENT", "READY"],
        )
        with self.call("stateful sets"):
            stateful = self.apps.list_namespaced_stateful_set(ns, _request_timeout=rt()).items
        self._section(
            "statefulset.apps",
            counts,
            [
                (s.metadata.name, f"{s.status.ready_replicas or 0}/{s.spec.replicas}")
                for s in stateful
            ],
            ["READY"],
        )
        summary = ", ".join(f"{n} {kind}s" for kind, n in counts.items())
        return ProbeResult(Outcome.OK, f"{ns}: {summary}", {"counts": counts})

    def _section(
        self, kind: str, counts: dict[str, int], rows: list[tuple[Any, ...]], headers: list[str]
    ) -> None:
        counts[kind.split(".")[0]] = len(rows)
        if not rows:
            return
        self.emit_table(["NAME", *headers], [(f"{kind}/{r[0]}", *r[1:]) for r in rows])
        self.emit("")


@dataclass
class LogsAllPodsParams(KubeParams):
    tail: int = 50  # lines per container

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.tail <= 10_000:
            raise ProbeError("parameter tail must be between 1 and 10000")


@register
class LogsAllPods(KubeProbe):
    """ref.logs_all_pods: the last lines of every container of every pod with the
    label (`kubectl logs -l app=lotolink-backend --all-containers`)."""

    name = "kubernetes.logs_all_pods"
    Params = LogsAllPodsParams

    def inspect(self) -> ProbeResult:
        pods = self.pods()
        counts: dict[str, int] = {}
        wanted = [
            (pod.metadata.name, c.name)
            for pod in pods
            for c in [*(pod.spec.init_containers or []), *pod.spec.containers]
        ]
        texts = self.read_logs(wanted, tail_lines=self.params.tail)
        for (pod_name, container), text in zip(wanted, texts, strict=True):
            key = f"{pod_name}/{container}"
            lines = text.splitlines()
            counts[key] = len(lines)
            for line in lines:
                self.emit(f"[{key}] {line}")
        return ProbeResult(
            Outcome.OK if pods else Outcome.WARNING,
            f"{sum(counts.values())} lines from {len(counts)} containers of {len(pods)} pods",
            {"containers": counts},
        )


@dataclass
class LogsFollowParams(KubeParams):
    pod: str = ""  # default: a ready pod with the selector, else a running one
    container: str = ""
    seconds: float = 20.0  # stop after this long
    max_lines: int = 200  # or after this many lines
    tail: int = 10  # lines of history before following

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.seconds <= 600:
            raise ProbeError("parameter seconds must be above 0 and at most 600")
        if not 1 <= self.max_lines <= 10_000 or self.tail < 0:
            raise ProbeError("parameter max_lines must be between 1 and 10000")


_END = object()


@register
class LogsFollow(KubeProbe):
    """ref.logs_follow: `kubectl logs -f` for a bounded time and line count; each
    line is emitted as it arrives, then the probe stops by itself."""

    name = "kubernetes.logs_follow"
    Params = LogsFollowParams

    def inspect(self) -> ProbeResult:
        p: LogsFollowParams = self.params
        if p.pod:
            with self.call(f"pod {p.pod}"):
                chosen = self.core.read_namespaced_pod(
                    p.pod, self.namespace, _request_timeout=self.rt()
                )
        else:
            chosen = self.log_pod()
        pod = chosen.metadata.name
        seconds = min(p.seconds, max(0.5, self.time_left() - 1))
        with self.call(f"logs of pod {pod}"):
            response = self.core.read_namespaced_pod_log(
                pod,
                self.namespace,
                container=p.container or default_container(chosen),
                follow=True,
                tail_lines=p.tail,
                _preload_content=False,
                _request_timeout=(self.connect_timeout, seconds + 5),
            )
        lines: queue.Queue[Any] = queue.Queue()

        def read() -> None:
            buffer = b""
            try:
                for chunk in response.stream(4096, decode_content=True):
                    buffer += chunk
                    *done, buffer = buffer.split(b"\n")
                    for line in done:
                        lines.put(line.decode("utf-8", "replace"))
            except Exception:  # noqa: S110  (closed under us at the end: expected)
                pass
            finally:
                lines.put(_END)

        reader = threading.Thread(target=read, daemon=True, name=f"logs-follow-{pod}")
        reader.start()
        deadline = time.monotonic() + seconds
        count = 0
        ended = False
        try:
            while count < p.max_lines:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    line = lines.get(timeout=left)
                except queue.Empty:
                    break
                if line is _END:
                    ended = True
                    break
                self.emit(line)
                count += 1
        finally:
            # Unblock the reader's pending read (close() alone would wait for it),
            # and drop the connection rather than pool it mid-stream.
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                response.shutdown()
            response.close()
            reader.join(timeout=2)
        if ended:
            why = "the log stream ended (the container stopped?)"
        elif count >= p.max_lines:
            why = f"stopped after {p.max_lines} lines"
        else:
            why = f"stopped after {seconds:g} s"
        return ProbeResult(
            Outcome.OK,
            f"followed pod {pod} for {count} lines: {why}",
            {"pod": pod, "lines": count, "ended": ended},
        )


@dataclass
class DiskParams(KubeParams):
    deployment: str = "postgres"
    container: str = ""
    path: str = "/var/lib/postgresql/data"
    low_ratio: float = 0.85  # used share at or above which the disk is "low"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.low_ratio <= 1:
            raise ProbeError("parameter low_ratio must be above 0 and at most 1")
        if not self.path.startswith("/"):
            raise ProbeError("parameter path must be an absolute path")


@register
class Disk(KubeProbe):
    """db.disk: `df` of the data directory, run in the database pod over exec;
    `disk_low` when its use is at or above `low_ratio`."""

    name = "kubernetes.disk"
    Params = DiskParams

    def inspect(self) -> ProbeResult:
        p: DiskParams = self.params
        pod = self.ready_pod().metadata.name
        command = ["df", "-Pk", p.path]
        self.emit(f"$ {shlex.join(command)}  (in pod {pod})")
        code, out, err = self.exec(pod, command, container=p.container, on_line=self.emit)
        if code != 0:
            raise ProbeError(f"df in pod {pod} exited with code {code}: {err.strip()[:300]}")
        rows = [line.split() for line in out.strip().splitlines()[1:]]
        if not rows or len(rows[-1]) < 6:
            raise ProbeError(f"cannot read the output of df in pod {pod}: {out[:300]!r}")
        filesystem, size_k, used_k, avail_k, _, mount = rows[-1][:6]
        size, used, avail = int(size_k) * 1024, int(used_k) * 1024, int(avail_k) * 1024
        ratio = used / (used + avail) if used + avail else 0.0
        data = {
            "pod": pod,
            "path": p.path,
            "filesystem": filesystem,
            "mount": mount,
            "size_bytes": size,
            "used_bytes": used,
            "available_bytes": avail,
            "used_ratio": round(ratio, 4),
        }
        summary = f"{p.path} in {pod}: {ratio:.0%} used, {avail / 2**30:.1f} GiB free"
        if ratio >= p.low_ratio:
            evidence = {
                "disk_low": {k: data[k] for k in ("pod", "path", "used_ratio", "available_bytes")}
            }
            return ProbeResult(
                Outcome.FAILING, f"{summary}: at or above {p.low_ratio:.0%}", data, evidence
            )
        if ratio >= p.low_ratio - 0.1:
            return ProbeResult(Outcome.WARNING, f"{summary}: close to {p.low_ratio:.0%}", data)
        return ProbeResult(Outcome.OK, summary, data)


# --- actions ---------------------------------------------------------------------------------


@dataclass
class ScaleParams(KubeParams):
    replicas: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.replicas <= 50:
            raise ProbeError("parameter replicas must be between 1 and 50")


@register
class Scale(KubeAction):
    """api.scale: set the deployment's replica count (its scale subresource)."""

    name = "kubernetes.scale"
    Params = ScaleParams

    @classmethod
    def choices(cls, step_params: dict[str, Any], evidence: dict[str, Any]) -> list[ParamChoice]:
        return [
            ParamChoice(
                "replicas",
                "Replicas",
                help="How many backend pods to run",
                minimum=1,
                maximum=50,
                initial=step_params.get("replicas", 5),
            )
        ]

    def _current(self) -> int:
        name = self.params.deployment
        with self.call(f"deployment {name}"):
            scale = self.apps.read_namespaced_deployment_scale(
                name, self.namespace, _request_timeout=self.rt()
            )
        return scale.spec.replicas or 0

    def describe(self) -> str:
        return (
            f"scale deployment {self.params.deployment} in {self.namespace} "
            f"from {self._current()} to {self.params.replicas} replicas"
        )

    def inspect(self) -> ProbeResult:
        name, want = self.params.deployment, self.params.replicas
        before = self._current()
        with self.call(f"deployment {name}"):
            scale = self.apps.patch_namespaced_deployment_scale(
                name,
                self.namespace,
                {"spec": {"replicas": want}},
                _content_type=MERGE_PATCH,
                _request_timeout=self.rt(),
            )
        summary = f"deployment {name} scaled from {before} to {scale.spec.replicas} replicas"
        self.emit(summary)
        return ProbeResult(
            Outcome.OK, summary, {"deployment": name, "from": before, "to": scale.spec.replicas}
        )


def _restart_patch(when: datetime) -> dict[str, Any]:
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


@register
class Restart(KubeAction):
    """api.restart: `kubectl rollout restart` (a new restartedAt annotation on
    the pod template, so the deployment replaces its pods one by one)."""

    name = "kubernetes.restart"

    def describe(self) -> str:
        d = self.deployment()
        return (
            f"restart deployment {d.metadata.name} in {self.namespace}: replace its "
            f"{d.spec.replicas} pods one by one (rollout restart)"
        )

    def inspect(self) -> ProbeResult:
        name = self.deployment().metadata.name
        patch = _restart_patch(datetime.now(UTC))
        with self.call(f"deployment {name}"):
            self.apps.patch_namespaced_deployment(
                name,
                self.namespace,
                patch,
                _content_type=STRATEGIC_PATCH,
                _request_timeout=self.rt(),
            )
        stamp = patch["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        summary = f"deployment {name} restarted (restartedAt {stamp})"
        self.emit(summary)
        return ProbeResult(Outcome.OK, summary, {"deployment": name, "restarted_at": stamp})


@dataclass
class RollbackParams(KubeParams):
    to_revision: int = 0  # 0: the revision before the current one


@register
class Rollback(KubeAction):
    """api.rollback: `kubectl rollout undo` (the deployment's pod template
    replaced by the previous ReplicaSet's, in one JSON patch)."""

    name = "kubernetes.rollback"
    Params = RollbackParams

    @classmethod
    def choices(cls, step_params: dict[str, Any], evidence: dict[str, Any]) -> list[ParamChoice]:
        """The revision before the recent deploy, when init.recent_deploys found one;
        otherwise nothing to choose (the previous revision is the default)."""
        found = (evidence.get("recent_deploy") or {}).get("details") or {}
        previous = found.get("previous_revision")
        if not previous:
            return []
        images = ", ".join(found.get("previous_images") or []) or "?"
        return [
            ParamChoice(
                "to_revision",
                "Revision to roll back to",
                help=(
                    f"Revision {found.get('revision')} was deployed "
                    f"{found.get('minutes_ago')} min ago"
                ),
                options=((previous, f"revision {previous} ({images})"),),
                initial=previous,
            )
        ]

    def _target(self) -> tuple[client.V1Deployment, int, client.V1ReplicaSet]:
        d = self.deployment()
        if d.spec.paused:
            raise ProbeError(
                f"deployment {d.metadata.name} is paused: resume it before rolling back"
            )
        sets = self.replica_sets(d)
        current = int((d.metadata.annotations or {}).get(REVISION, "0") or 0)
        if not current and sets:
            current = _revision(sets[-1])
        wanted = self.params.to_revision
        if wanted:
            found = [rs for rs in sets if _revision(rs) == wanted]
            if not found:
                known = ", ".join(str(_revision(rs)) for rs in sets) or "none"
                raise ProbeError(
                    f"revision {wanted} of {d.metadata.name} not found (known: {known})"
                )
            if wanted == current:
                raise ProbeError(f"revision {wanted} is the current revision of {d.metadata.name}")
            return d, current, found[0]
        older = [rs for rs in sets if _revision(rs) < current]
        if not older:
            raise ProbeError(
                f"deployment {d.metadata.name} has no previous revision to roll back to"
            )
        return d, current, older[-1]

    def describe(self) -> str:
        d, current, rs = self._target()
        return (
            f"roll back deployment {d.metadata.name} in {self.namespace} from revision "
            f"{current} ({', '.join(_images(d.spec.template))}) to revision {_revision(rs)} "
            f"({', '.join(_images(rs.spec.template))})"
        )

    def inspect(self) -> ProbeResult:
        d, current, rs = self._target()
        template = self.api.sanitize_for_serialization(rs.spec.template)
        labels = dict(template.get("metadata", {}).get("labels") or {})
        labels.pop("pod-template-hash", None)
        template.setdefault("metadata", {})["labels"] = labels
        own = d.metadata.annotations or {}
        annotations = {k: v for k, v in own.items() if k in ANNOTATIONS_TO_SKIP}
        annotations.update(
            {
                k: v
                for k, v in (rs.metadata.annotations or {}).items()
                if k not in ANNOTATIONS_TO_SKIP
            }
        )
        patch = [
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "replace", "path": "/metadata/annotations", "value": annotations},
        ]
        with self.call(f"deployment {d.metadata.name}"):
            self.apps.patch_namespaced_deployment(
                d.metadata.name,
                self.namespace,
                patch,
                _content_type=JSON_PATCH,
                _request_timeout=self.rt(),
            )
        images = _images(rs.spec.template)
        summary = (
            f"deployment {d.metadata.name} rolled back from revision {current} "
            f"to revision {_revision(rs)} ({', '.join(images)})"
        )
        self.emit(summary)
        return ProbeResult(
            Outcome.OK,
            summary,
            {"deployment": d.metadata.name, "from": current, "to": _revision(rs), "images": images},
        )


def parse_addresses(text: str) -> list[str]:
    """IPs and CIDRs separated by spaces, commas or lines, as networks ("/32" for
    a single IPv4 address); a clear ProbeError for anything else."""
    found: list[str] = []
    for item in re.split(r"[\s,;]+", text.strip()):
        if not item:
            continue
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            raise ProbeError(f"{item!r} is not an IP address or CIDR block: {exc}") from None
        if network.prefixlen == 0:
            raise ProbeError(f"{item} would block every address: give narrower blocks")
        if str(network) not in found:
            found.append(str(network))
    if not found:
        raise ProbeError("give at least one IP address or CIDR block to block")
    return found


@dataclass
class BlockIpsParams(KubeParams):
    addresses: str = ""  # IPs or CIDRs, separated by spaces, commas or lines

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.addresses:
            parse_addresses(self.addresses)


@register
class BlockIps(KubeAction):
    """sec.block_ip: a NetworkPolicy admitting every source to the backend's
    pods except the given addresses. NetworkPolicies add up: another policy
    selecting the same pods that admits those addresses still lets them in,
    and only traffic that keeps its client address (not through a proxy) is
    matched. The policy is named after its addresses, so blocking the same set
    twice finds it already there."""

    name = "kubernetes.block_ips"
    Params = BlockIpsParams

    @classmethod
    def choices(cls, step_params: dict[str, Any], evidence: dict[str, Any]) -> list[ParamChoice]:
        return [
            ParamChoice(
                "addresses",
                "Addresses to block",
                help="IP addresses or CIDR blocks, separated by spaces or commas",
                initial=step_params.get("addresses", ""),
                text=True,
            )
        ]

    def policy(self) -> dict[str, Any]:
        networks = parse_addresses(self.params.addresses)
        v4 = [n for n in networks if ipaddress.ip_network(n).version == 4]
        v6 = [n for n in networks if ipaddress.ip_network(n).version == 6]
        peers: list[dict[str, Any]] = [{"ipBlock": {"cidr": "0.0.0.0/0", "except": v4}}]
        peers.append(
            {"ipBlock": {"cidr": "::/0", "except": v6}} if v6 else {"ipBlock": {"cidr": "::/0"}}
        )
        for peer in peers:
            if not peer["ipBlock"].get("except", True):
                del peer["ipBlock"]["except"]
        digest = hashlib.sha256(" ".join(sorted(networks)).encode()).hexdigest()[:10]
        labels = dict(part.split("=", 1) for part in self.selector.split(",") if "=" in part)
        if not labels:
            raise ProbeError(f"selector {self.selector!r} must be label=value pairs")
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": f"lotoops-block-{digest}",
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "lotoops"},
                "annotations": {"lotoops/blocked": ",".join(networks)},
            },
            "spec": {
                "podSelector": {"matchLabels": labels},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": peers}],
            },
        }

    def describe(self) -> str:
        body = self.policy()
        blocked = body["metadata"]["annotations"]["lotoops/blocked"].replace(",", ", ")
        return (
            f"create NetworkPolicy {body['metadata']['name']} in {self.namespace} denying "
            f"{blocked} to pods {self.selector}: {json.dumps(body, sort_keys=True)}"
        )

    def inspect(self) -> ProbeResult:
        body = self.policy()
        name = body["metadata"]["name"]
        networking = client.NetworkingV1Api(self.api)
        try:
            with self.call(f"NetworkPolicy {name}"):
                networking.create_namespaced_network_policy(
                    self.namespace,
                    body,
                    _content_type="application/json",
                    _request_timeout=self.rt(),
                )
        except ProbeError as exc:
            if "(409)" not in str(exc):
                raise
            summary = f"NetworkPolicy {name} is already in place in {self.namespace}"
            self.emit(summary)
            return ProbeResult(Outcome.OK, summary, {"policy": name, "created": False})
        blocked = body["metadata"]["annotations"]["lotoops/blocked"].split(",")
        summary = f"NetworkPolicy {name} created: {', '.join(blocked)} denied to {self.selector}"
        self.emit(summary)
        return ProbeResult(
            Outcome.OK, summary, {"policy": name, "created": True, "blocked": blocked}
        )


@dataclass
class RotateSecretsParams(KubeParams):
    secret: str = "lotolink-secrets"  # noqa: S105  (a Secret's name)
    keys: str = ""  # keys of the Secret, separated by spaces or commas
    length: int = 32  # random bytes per new value (URL-safe base64 text)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 16 <= self.length <= 256:
            raise ProbeError("parameter length must be between 16 and 256")

    def key_list(self) -> list[str]:
        keys = list(dict.fromkeys(k for k in re.split(r"[\s,;]+", self.keys.strip()) if k))
        if not keys:
            raise ProbeError(f"name the keys of Secret {self.secret} to rotate")
        return keys


@register
class RotateSecrets(KubeAction):
    """sec.rotate_secrets: new random values for the chosen keys of a Secret, then
    a rollout restart so the backend reads them. The values are never shown,
    logged or returned: the Secret's answer is not even read."""

    name = "kubernetes.rotate_secrets"
    Params = RotateSecretsParams

    @classmethod
    def choices(cls, step_params: dict[str, Any], evidence: dict[str, Any]) -> list[ParamChoice]:
        secret = step_params.get("secret", "lotolink-secrets")
        return [
            ParamChoice(
                "keys",
                "Keys to rotate",
                help=f"Keys of Secret {secret}, separated by spaces or commas",
                initial=step_params.get("keys", ""),
                text=True,
            )
        ]

    def _checked(self) -> tuple[str, list[str]]:
        """The Secret's resourceVersion after checking every key exists."""
        p: RotateSecretsParams = self.params
        keys = p.key_list()
        with self.call(f"Secret {p.secret}"):
            # Only metadata and key names are used; the values are dropped at once.
            raw = self.core.read_namespaced_secret(
                p.secret, self.namespace, _preload_content=False, _request_timeout=self.rt()
            )
            body = json.loads(raw.data)
            raw.release_conn()
        existing = set((body.get("data") or {}).keys())
        version = body["metadata"]["resourceVersion"]
        del body
        missing = [k for k in keys if k not in existing]
        if missing:
            raise ProbeError(
                f"Secret {p.secret} in {self.namespace} has no key {', '.join(missing)} "
                f"(it has: {', '.join(sorted(existing)) or 'none'}); nothing was changed"
            )
        return version, keys

    def describe(self) -> str:
        _, keys = self._checked()
        d = self.deployment()
        return (
            f"set new random values for {', '.join(keys)} in Secret {self.params.secret} "
            f"({self.namespace}), then restart deployment {d.metadata.name} so its pods read "
            "them; the new values are never shown"
        )

    def inspect(self) -> ProbeResult:
        p: RotateSecretsParams = self.params
        version, keys = self._checked()
        name = self.deployment().metadata.name
        data = {
            k: base64.b64encode(secrets.token_urlsafe(p.length).encode()).decode() for k in keys
        }
        # resourceVersion in a merge patch is a precondition: a Secret changed
        # since we read it answers 409 and nothing is written.
        patch = {"metadata": {"resourceVersion": version}, "data": data}
        with self.call(f"Secret {p.secret}"):
            answer = self.core.patch_namespaced_secret(
                p.secret,
                self.namespace,
                patch,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self.rt(),
            )
            answer.drain_conn()  # the answer carries the new values: never read
            answer.release_conn()
        del data, patch
        self.emit(f"Secret {p.secret}: new values for {', '.join(keys)}")
        try:
            with self.call(f"deployment {name}"):
                self.apps.patch_namespaced_deployment(
                    name,
                    self.namespace,
                    _restart_patch(datetime.now(UTC)),
                    _content_type=STRATEGIC_PATCH,
                    _request_timeout=self.rt(),
                )
        except ProbeError as exc:
            raise ProbeError(
                f"Secret {p.secret} was rotated ({', '.join(keys)}) but restarting {name} "
                f"failed: {exc}; run api.restart"
            ) from None
        summary = f"rotated {', '.join(keys)} in Secret {p.secret} and restarted {name}"
        self.emit(summary)
        return ProbeResult(
            Outcome.OK, summary, {"secret": p.secret, "keys": keys, "restarted": name}
        )


@dataclass
class ExecParams(KubeParams):
    command: list[str] = field(default_factory=list)
    container: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.command or not all(self.command):
            raise ProbeError("parameter command must be a non-empty list of words")


@register
class Exec(KubeAction):
    """pay.reconcile: run the step's command in a ready backend pod over the exec
    websocket, streaming its output; the exit code is the verdict."""

    name = "kubernetes.exec"
    Params = ExecParams

    def describe(self) -> str:
        pod = self.ready_pod().metadata.name
        where = f" (container {self.params.container})" if self.params.container else ""
        return (
            f"run {shlex.join(self.params.command)} in pod {pod}{where} of deployment "
            f"{self.params.deployment} in {self.namespace}"
        )

    def inspect(self) -> ProbeResult:
        p: ExecParams = self.params
        pod = self.ready_pod().metadata.name
        self.emit(f"$ {shlex.join(p.command)}  (in pod {pod})")
        started = time.monotonic()
        code, out, err = self.exec(pod, p.command, container=p.container, on_line=self.emit)
        seconds = time.monotonic() - started
        data = {"pod": pod, "command": p.command, "exit_code": code, "seconds": round(seconds, 2)}
        if code == 0:
            return ProbeResult(
                Outcome.OK,
                f"{shlex.join(p.command)} succeeded in pod {pod} ({seconds:.1f} s)",
                data,
            )
        last = (err.strip() or out.strip()).splitlines()[-1:] or [""]
        return ProbeResult(
            Outcome.FAILING,
            f"{shlex.join(p.command)} exited with code {code} in pod {pod}: {last[0][:200]}",
            data,
        )


@dataclass
class ExportLogsParams(KubeParams):
    hours: int = 24

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.hours <= 24 * 30:
            raise ProbeError("parameter hours must be between 1 and 720")


@register
class ExportLogs(KubeAction):
    """sec.export_logs: the last `hours` of logs of every container of the
    backend's pods, with timestamps, written to one text file that the engine
    keeps on the incident."""

    name = "kubernetes.export_logs"
    Params = ExportLogsParams

    def describe(self) -> str:
        pods = self.pods()
        if not pods:
            raise ProbeError(f"no pods with {self.selector} in namespace {self.namespace}")
        return (
            f"export the last {self.params.hours} h of logs of {len(pods)} pods with "
            f"{self.selector} in {self.namespace} (all containers) to a file kept on the incident"
        )

    def inspect(self) -> ProbeResult:
        p: ExportLogsParams = self.params
        pods = self.pods()
        if not pods:
            raise ProbeError(f"no pods with {self.selector} in namespace {self.namespace}")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115  (handed to the engine)
            "w", encoding="utf-8", prefix="lotoops-logs-", suffix=".txt", delete=False
        )
        counts: dict[str, int] = {}
        try:
            with handle:
                handle.write(
                    f"# logs of pods with {self.selector} in {self.namespace}, "
                    f"last {p.hours} h, exported {stamp}\n"
                )
                for pod in pods:
                    for c in [*(pod.spec.init_containers or []), *pod.spec.containers]:
                        key = f"{pod.metadata.name}/{c.name}"
                        counts[key] = self._copy(pod.metadata.name, c.name, p.hours, key, handle)
                        self.emit(f"{key}: {counts[key]} lines")
        except BaseException:
            os.unlink(handle.name)
            raise
        total = sum(counts.values())
        name = f"{p.deployment}-logs-{stamp}.txt"
        return ProbeResult(
            Outcome.OK,
            f"exported {total} log lines of {len(counts)} containers ({p.hours} h) to {name}",
            {"containers": counts, "lines": total, "hours": p.hours},
            files=[
                ProbeFile(name=name, path=handle.name, content_type="text/plain; charset=utf-8")
            ],
        )

    def _copy(self, pod: str, container: str, hours: int, key: str, out: Any) -> int:
        with self.call(f"logs of {key}"):
            response = self.core.read_namespaced_pod_log(
                pod,
                self.namespace,
                container=container,
                since_seconds=hours * 3600,
                timestamps=True,
                _preload_content=False,
                _request_timeout=self.rt(),
            )
            count = 0
            buffer = b""
            try:
                for chunk in response.stream(64 * 1024, decode_content=True):
                    buffer += chunk
                    *done, buffer = buffer.split(b"\n")
                    for line in done:
                        out.write(
                            f"[{key}] {redact(line.decode('utf-8', 'replace'), self._secrets)}\n"
                        )
                        count += 1
                if buffer:
                    out.write(
                        f"[{key}] {redact(buffer.decode('utf-8', 'replace'), self._secrets)}\n"
                    )
                    count += 1
            finally:
                response.release_conn()
        return count
