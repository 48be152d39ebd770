"""An emulated Kubernetes API server on 127.0.0.1 for the probe tests.

It answers the way the real kube-apiserver does for what the probes use, so the
official client is exercised end to end (URLs, query strings, content types,
JSON bodies, Status errors, the exec websocket):

- namespaced CRUD-ish for pods, events, secrets, services (core/v1),
  deployments, replica sets, stateful sets (apps/v1), network policies
  (networking.k8s.io/v1): list with labelSelector / fieldSelector, get, create
  (409 AlreadyExists), patch with merge / strategic merge / JSON patch (the
  content type decides, a JSON patch must be a list), resourceVersion as an
  optimistic-lock precondition in merge patches (409 Conflict);
- the deployments' `scale` subresource (autoscaling/v1 Scale);
- pod logs with `tailLines`, `sinceSeconds`, `timestamps`, `container` (400 when
  a multi-container pod gets none), and `follow=true` streaming lines appended
  while the client reads;
- exec over a websocket (`v4.channel.k8s.io`: channel byte + payload, status
  on channel 3 as a metav1.Status with the exit code);
- metrics.k8s.io/v1beta1 PodMetrics (404 "the server could not find the
  requested resource" when metrics-server is not installed);
- bearer-token checks (401) and forbidden verbs (403 with the real message).

Every request is recorded (method, path, query, content type, JSON body) so tests
assert the exact writes an action sent, or that none was sent.

kmock (PyPI) was considered: its server runs inside the test's asyncio loop (the
synchronous official client would block it) and it has no exec websocket,
metrics API or log streaming, which these probes need.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import WSMsgType, web

RESOURCES = {
    # (group path, plural) -> (apiVersion, kind)
    ("api/v1", "pods"): ("v1", "Pod"),
    ("api/v1", "events"): ("v1", "Event"),
    ("api/v1", "secrets"): ("v1", "Secret"),
    ("api/v1", "services"): ("v1", "Service"),
    ("apis/apps/v1", "deployments"): ("apps/v1", "Deployment"),
    ("apis/apps/v1", "replicasets"): ("apps/v1", "ReplicaSet"),
    ("apis/apps/v1", "statefulsets"): ("apps/v1", "StatefulSet"),
    ("apis/networking.k8s.io/v1", "networkpolicies"): ("networking.k8s.io/v1", "NetworkPolicy"),
    ("apis/metrics.k8s.io/v1beta1", "pods"): ("metrics.k8s.io/v1beta1", "PodMetrics"),
}
GROUPS = {"api/v1": "", "apis/apps/v1": "apps", "apis/networking.k8s.io/v1": "networking.k8s.io"}


def now() -> datetime:
    return datetime.now(UTC)


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(**delta: float) -> str:
    return stamp(now() - timedelta(**delta))


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str
    body: Any


@dataclass
class ExecResult:
    stdout: str = ""
    stderr: str = ""
    exit_code: int = 0
    delay: float = 0.0  # seconds between output lines


def status(code: int, reason: str, message: str, details: dict | None = None) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return web.json_response(body, status=code)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 (strategic merge behaves the same for the maps patched here)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        if op["op"] in ("replace", "add"):
            if op["op"] == "replace" and isinstance(parent, dict) and last not in parent:
                raise KeyError(op["path"])
            parent[last] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del parent[last]
        elif op["op"] == "test":
            if parent.get(last) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
        else:
            raise ValueError(f"unsupported op {op['op']}")
    return doc


def matches_labels(obj: dict[str, Any], selector: str) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.strip() not in labels:
            return False
    return True


def field_value(obj: dict[str, Any], path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class KubeServer:
    """Start with `start()`, stop with `stop()`; `url` is its address."""

    def __init__(self, token: str = "") -> None:
        self.token = token
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.logs: dict[tuple[str, str, str], list[tuple[datetime, str]]] = {}
        self.previous_logs: dict[tuple[str, str, str], list[tuple[datetime, str]]] = {}
        self.exec_results: dict[tuple[str, ...], ExecResult] = {}
        self.forbidden: set[tuple[str, str]] = set()  # (verb, plural)
        # (method, path) -> (code, reason, message): answered as that Status
        self.errors: dict[tuple[str, str], tuple[int, str, str]] = {}
        self.metrics_installed = True
        self.latency = 0.0  # seconds before each answer, like a busy API server (benchmarks)
        self.requests: list[Recorded] = []
        self.execs: list[dict[str, Any]] = []
        self.service_account = "system:serviceaccount:lotolink:lotoops"
        self._version = 1000
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> KubeServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        started = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(
                app, handle_signals=False, shutdown_timeout=1, access_log=None
            )
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.SockSite(self._runner, sock).start())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, daemon=True, name="k8s-emulator")
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("the emulated API server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- state the tests set and read -----------------------------------------------

    def add(self, obj: dict[str, Any], plural: str | None = None) -> dict[str, Any]:
        api_version, kind = obj["apiVersion"], obj["kind"]
        group = "api/v1" if api_version == "v1" else f"apis/{api_version}"
        plural = plural or next(
            p for (g, p), (_, k) in RESOURCES.items() if g == group and k == kind
        )
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "lotolink")
        meta.setdefault("uid", f"uid-{kind.lower()}-{meta['name']}")
        meta.setdefault("creationTimestamp", ago(hours=3))
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = self._next_version()
        with self._lock:
            self.objects[(group, plural, meta["namespace"], meta["name"])] = obj
        return obj

    def get(self, plural: str, name: str, namespace: str = "lotolink") -> dict[str, Any]:
        for (_, p, ns, n), obj in self.objects.items():
            if (p, ns, n) == (plural, namespace, name) and obj["kind"] != "PodMetrics":
                return obj
        raise KeyError(name)

    def add_logs(
        self,
        pod: str,
        container: str,
        lines: list[str],
        *,
        age: timedelta = timedelta(),
        previous: bool = False,
    ) -> None:
        """Log lines of a container (of its previous instance with `previous`)."""
        store = self.previous_logs if previous else self.logs
        with self._lock:
            entries = store.setdefault(("lotolink", pod, container), [])
            for line in lines:
                entries.append((now() - age, line))

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method not in ("GET", "HEAD")]

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    # --- the HTTP side ---------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                {k: request.query.getall(k) for k in request.query},
                request.headers.get("Content-Type", ""),
                body,
            )
        )
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return status(401, "Unauthorized", "Unauthorized")
        if (request.method, request.path) in self.errors:
            return status(*self.errors[(request.method, request.path)])
        path = request.path.strip("/")
        m = re.fullmatch(
            r"(api/v1|apis/[^/]+/[^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?(?:/([^/]+))?",
            path,
        )
        if not m:
            return status(404, "NotFound", "the server could not find the requested resource")
        group, namespace, plural, name, sub = m.groups()
        if group == "apis/metrics.k8s.io/v1beta1" and not self.metrics_installed:
            return web.Response(status=404, text="404 page not found\n")
        if (group, plural) not in RESOURCES:
            return status(404, "NotFound", "the server could not find the requested resource")
        verb = {
            "GET": "get" if name else "list",
            "PATCH": "patch",
            "POST": "create",
            "PUT": "update",
            "DELETE": "delete",
        }[request.method]
        if sub == "exec":
            verb = "create"
        resource = f"{plural}/{sub}" if sub else plural
        if (verb, resource) in self.forbidden or (verb, plural) in self.forbidden:
            api_group = GROUPS.get(group, group.split("/")[1])
            return status(
                403,
                "Forbidden",
                f"{resource} {f'"{name}" ' if name else ''}is forbidden: User "
                f'"{self.service_account}" cannot {verb} resource "{resource}" in API group '
                f'"{api_group}" in the namespace "{namespace}"',
                {"name": name, "kind": plural} if name else {"kind": plural},
            )
        if name is None:
            if request.method == "POST":
                return self._create(group, plural, namespace, body)
            return self._list(request, group, plural, namespace)
        key = (group, plural, namespace, name)
        obj = self.objects.get(key)
        if obj is None:
            kind = plural if group == "api/v1" else f"{plural}.{GROUPS.get(group, '')}"
            return status(
                404,
                "NotFound",
                f'{kind} "{name}" not found',
                {"name": name, "kind": plural}
                | ({"group": GROUPS[group]} if GROUPS.get(group) else {}),
            )
        if sub == "log":
            return await self._log(request, obj)
        if sub == "exec":
            return await self._exec(request, obj)
        if sub == "scale" and plural == "deployments":
            return self._scale(request, obj, body)
        if sub:
            return status(404, "NotFound", "the server could not find the requested resource")
        if request.method == "GET":
            return web.json_response(obj)
        if request.method == "PATCH":
            return self._patch(request, key, obj, body)
        return status(405, "MethodNotAllowed", "the server does not allow this method")

    def _list(self, request: web.Request, group: str, plural: str, ns: str) -> web.Response:
        api_version, kind = RESOURCES[(group, plural)]
        selector = request.query.get("labelSelector", "")
        fields = [
            f.split("=", 1) for f in request.query.get("fieldSelector", "").split(",") if "=" in f
        ]
        items = [
            obj
            for (g, p, n, _), obj in sorted(self.objects.items())
            if (g, p, n) == (group, plural, ns)
            and matches_labels(obj, selector)
            and all(str(field_value(obj, k)) == v for k, v in fields)
        ]
        return web.json_response(
            {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": str(self._version)},
                "items": items,
            }
        )

    def _create(self, group: str, plural: str, ns: str, body: Any) -> web.Response:
        name = body["metadata"]["name"]
        if (group, plural, ns, name) in self.objects:
            kind = plural if group == "api/v1" else f"{plural}.{GROUPS.get(group, '')}"
            return status(
                409,
                "AlreadyExists",
                f'{kind} "{name}" already exists',
                {"name": name, "kind": plural},
            )
        obj = copy.deepcopy(body)
        obj["metadata"]["namespace"] = ns
        obj["metadata"]["creationTimestamp"] = stamp(now())
        self.add(obj, plural)
        return web.json_response(obj, status=201)

    def _apply_patch(self, request: web.Request, obj: dict[str, Any], body: Any) -> Any:
        kind = request.headers.get("Content-Type", "").split(";")[0]
        if kind == "application/json-patch+json":
            if not isinstance(body, list):
                raise PatchError(
                    400,
                    "BadRequest",
                    "json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp",
                )
            return json_patch(obj, body)
        if kind in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if not isinstance(body, dict):
                raise PatchError(
                    400, "BadRequest", "the body of the request was in an unknown format"
                )
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != obj["metadata"]["resourceVersion"]:
                raise PatchError(
                    409,
                    "Conflict",
                    f"Operation cannot be fulfilled on {obj['kind'].lower()}s "
                    f'"{obj["metadata"]["name"]}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                )
            return merge_patch(obj, body)
        raise PatchError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: "
            "application/json-patch+json, application/merge-patch+json, "
            "application/apply-patch+yaml",
        )

    def _patch(
        self, request: web.Request, key: tuple[str, str, str, str], obj: dict[str, Any], body: Any
    ) -> web.Response:
        try:
            new = self._apply_patch(request, obj, body)
        except PatchError as exc:
            return status(exc.code, exc.reason, exc.message)
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            return status(422, "Invalid", f"the patch could not be applied: {exc}")
        if new.get("spec") != obj.get("spec"):
            new["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        new["metadata"]["resourceVersion"] = self._next_version()
        with self._lock:
            self.objects[key] = new
        return web.json_response(new)

    def _scale(self, request: web.Request, obj: dict[str, Any], body: Any) -> web.Response:
        def scale_of(d: dict[str, Any]) -> dict[str, Any]:
            return {
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {
                    "name": d["metadata"]["name"],
                    "namespace": d["metadata"]["namespace"],
                    "uid": d["metadata"]["uid"],
                    "resourceVersion": d["metadata"]["resourceVersion"],
                    "creationTimestamp": d["metadata"]["creationTimestamp"],
                },
                "spec": {"replicas": d["spec"].get("replicas", 1)},
                "status": {
                    "replicas": d.get("status", {}).get("replicas", 0),
                    "selector": ",".join(
                        f"{k}={v}" for k, v in d["spec"]["selector"]["matchLabels"].items()
                    ),
                },
            }

        if request.method == "GET":
            return web.json_response(scale_of(obj))
        try:
            new_scale = self._apply_patch(request, scale_of(obj), body)
        except PatchError as exc:
            return status(exc.code, exc.reason, exc.message)
        replicas = new_scale["spec"]["replicas"]
        if not isinstance(replicas, int) or replicas < 0:
            return status(
                422, "Invalid", f'Scale.autoscaling "{obj["metadata"]["name"]}" is invalid'
            )
        obj["spec"]["replicas"] = replicas
        obj["metadata"]["generation"] = obj["metadata"].get("generation", 1) + 1
        obj["metadata"]["resourceVersion"] = self._next_version()
        return web.json_response(scale_of(obj))

    def _container(self, request: web.Request, pod: dict[str, Any]) -> str | web.Response:
        names = [c["name"] for c in pod["spec"]["containers"]]
        wanted = request.query.get("container")
        if wanted is None:
            if len(names) == 1:
                return names[0]
            return status(
                400,
                "BadRequest",
                f"a container name must be specified for pod {pod['metadata']['name']}, "
                f"choose one of: [{' '.join(names)}]",
            )
        init = [c["name"] for c in pod["spec"].get("initContainers", [])]
        if wanted not in names + init:
            return status(
                400,
                "BadRequest",
                f"container {wanted} is not valid for pod {pod['metadata']['name']}",
            )
        return wanted

    async def _log(self, request: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        container = self._container(request, pod)
        if isinstance(container, web.Response):
            return container
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"], container)
        q = request.query
        state = next(
            (
                s
                for s in pod.get("status", {}).get("containerStatuses", [])
                if s["name"] == container
            ),
            {},
        )
        waiting = (state.get("state") or {}).get("waiting") or {}
        if q.get("previous") == "true":
            if not state.get("restartCount"):
                return status(
                    400,
                    "BadRequest",
                    f'previous terminated container "{container}" in pod '
                    f'"{pod["metadata"]["name"]}" not found',
                )
            entries = list(self.previous_logs.get(key, []))
        elif waiting.get("reason") in ("ContainerCreating", "PodInitializing"):
            return status(
                400,
                "BadRequest",
                f'container "{container}" in pod "{pod["metadata"]["name"]}" is waiting to '
                f"start: {waiting['reason']}",
            )
        else:
            entries = list(self.logs.get(key, []))
        if "sinceSeconds" in q:
            cutoff = now() - timedelta(seconds=int(q["sinceSeconds"]))
            entries = [e for e in entries if e[0] >= cutoff]
        if "tailLines" in q:
            tail = int(q["tailLines"])
            entries = entries[-tail:] if tail else []
        timestamps = q.get("timestamps") == "true"

        def render(entry: tuple[datetime, str]) -> bytes:
            when, line = entry
            prefix = when.strftime("%Y-%m-%dT%H:%M:%S.%f000Z ") if timestamps else ""
            return f"{prefix}{line}\n".encode()

        if q.get("follow") != "true":
            return web.Response(
                body=b"".join(render(e) for e in entries), content_type="text/plain"
            )
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        sent = len(self.logs.get(key, []))
        for entry in entries:
            await response.write(render(entry))
        while True:  # until the client goes away
            current = self.logs.get(key, [])
            for entry in current[sent:]:
                await response.write(render(entry))
            sent = len(current)
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        return response

    async def _exec(self, request: web.Request, pod: dict[str, Any]) -> web.StreamResponse:
        container = self._container(request, pod)
        if isinstance(container, web.Response):
            return container
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if "v4.channel.k8s.io" not in offered:
            return status(400, "BadRequest", "websocket protocol v4.channel.k8s.io not offered")
        command = tuple(request.query.getall("command", []))
        self.execs.append(
            {
                "pod": pod["metadata"]["name"],
                "container": container,
                "command": list(command),
                "stdout": request.query.get("stdout"),
                "stderr": request.query.get("stderr"),
                "stdin": request.query.get("stdin"),
                "tty": request.query.get("tty"),
            }
        )
        ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io",))
        await ws.prepare(request)
        result = self.exec_results.get(command)
        if result is None:
            await ws.send_bytes(
                b"\x03"
                + json.dumps(
                    {
                        "metadata": {},
                        "status": "Failure",
                        "message": (
                            "Internal error occurred: error executing command in container: "
                            "failed to exec in container: exec: "
                            f'"{command[0] if command else ""}": '
                            "executable file not found in $PATH"
                        ),
                        "reason": "InternalError",
                        "code": 500,
                    }
                ).encode()
            )
            await ws.close()
            return ws
        for channel, text in ((1, result.stdout), (2, result.stderr)):
            for line in text.splitlines(keepends=True):
                await ws.send_bytes(bytes([channel]) + line.encode())
                if result.delay:
                    await asyncio.sleep(result.delay)
        if result.exit_code == 0:
            final = {"metadata": {}, "status": "Success"}
        else:
            final = {
                "metadata": {},
                "status": "Failure",
                "message": (
                    f"command terminated with non-zero exit code: error executing command "
                    f"[{' '.join(command)}], exit code {result.exit_code}"
                ),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": str(result.exit_code)}]},
            }
        await ws.send_bytes(b"\x03" + json.dumps(final).encode())
        await ws.close()
        async for msg in ws:  # drain until closed
            if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                break
        return ws


class PatchError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


# --- realistic objects -----------------------------------------------------------------


def container_status(
    name: str = "backend",
    *,
    ready: bool = True,
    restarts: int = 0,
    state: dict[str, Any] | None = None,
    last_state: dict[str, Any] | None = None,
    image: str = "registry.lotolink.com/lotolink-backend:1.8.0",
) -> dict[str, Any]:
    return {
        "name": name,
        "ready": ready,
        "started": ready,
        "restartCount": restarts,
        "image": image,
        "imageID": f"{image}@sha256:{'ab' * 32}",
        "containerID": f"containerd://{'cd' * 32}",
        "state": state or {"running": {"startedAt": ago(hours=2)}},
        "lastState": last_state or {},
    }


def pod(
    name: str,
    *,
    app: str = "lotolink-backend",
    statuses: list[dict[str, Any]] | None = None,
    phase: str = "Running",
    memory_limit: str = "512Mi",
    containers: list[str] | None = None,
    image: str = "registry.lotolink.com/lotolink-backend:1.8.0",
) -> dict[str, Any]:
    names = containers or ["backend"]
    statuses = statuses or [container_status(n, image=image) for n in names]
    ready = all(s["ready"] for s in statuses)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "lotolink",
            "labels": {"app": app, "pod-template-hash": "7d9f8c6b5"},
            "creationTimestamp": ago(hours=2),
        },
        "spec": {
            "nodeName": "node-a",
            "containers": [
                {
                    "name": n,
                    "image": image,
                    "resources": {
                        "limits": {"memory": memory_limit, "cpu": "500m"},
                        "requests": {"memory": "256Mi", "cpu": "100m"},
                    },
                }
                for n in names
            ],
        },
        "status": {
            "phase": phase,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": ago(hours=2)},
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": ago(minutes=3),
                    **({} if ready else {"reason": "ContainersNotReady"}),
                },
                {
                    "type": "ContainersReady",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": ago(minutes=3),
                },
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": ago(hours=2)},
            ],
            "containerStatuses": statuses,
            "startTime": ago(hours=2),
        },
    }


def oom_killed_status(restarts: int = 4) -> dict[str, Any]:
    return container_status(
        restarts=restarts,
        state={"running": {"startedAt": ago(seconds=40)}},
        last_state={
            "terminated": {
                "exitCode": 137,
                "reason": "OOMKilled",
                "startedAt": ago(minutes=6),
                "finishedAt": ago(minutes=1),
                "containerID": f"containerd://{'ef' * 32}",
            }
        },
    )


def crash_loop_status(restarts: int = 7) -> dict[str, Any]:
    return container_status(
        ready=False,
        restarts=restarts,
        state={
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": "back-off 5m0s restarting failed container=backend pod=x",
            }
        },
        last_state={
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": ago(minutes=2),
                "finishedAt": ago(minutes=2),
            }
        },
    )


def template(image: str, *, app: str = "lotolink-backend", hash_: str = "") -> dict[str, Any]:
    labels = {"app": app} | ({"pod-template-hash": hash_} if hash_ else {})
    return {
        "metadata": {"labels": labels},
        "spec": {
            "containers": [
                {
                    "name": "backend",
                    "image": image,
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"limits": {"memory": "512Mi"}},
                }
            ]
        },
    }


def deployment(
    name: str = "lotolink-backend",
    *,
    replicas: int = 3,
    image: str = "registry.lotolink.com/lotolink-backend:1.8.0",
    revision: int = 7,
    ready: int | None = None,
    updated: int | None = None,
) -> dict[str, Any]:
    ready = replicas if ready is None else ready
    updated = replicas if updated is None else updated
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "lotolink",
            "uid": f"uid-deployment-{name}",
            "generation": 9,
            "annotations": {
                "deployment.kubernetes.io/revision": str(revision),
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
            },
            "labels": {"app": name},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template(image, app=name),
            "strategy": {"type": "RollingUpdate"},
        },
        "status": {
            "observedGeneration": 9,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {
                    "type": "Available",
                    "status": "True" if ready else "False",
                    "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                },
                {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": f'ReplicaSet "{name}-7d9f8c6b5" has successfully progressed.',
                },
            ],
        },
    }


def replica_set(
    revision: int,
    image: str,
    *,
    created: str,
    replicas: int = 0,
    deployment_name: str = "lotolink-backend",
    change_cause: str = "",
) -> dict[str, Any]:
    hash_ = f"{revision:x}a{revision}b{revision}c"
    annotations = {
        "deployment.kubernetes.io/revision": str(revision),
        "deployment.kubernetes.io/desired-replicas": "3",
        "deployment.kubernetes.io/max-replicas": "4",
    }
    if change_cause:
        annotations["kubernetes.io/change-cause"] = change_cause
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{deployment_name}-{hash_}",
            "namespace": "lotolink",
            "creationTimestamp": created,
            "labels": {"app": deployment_name, "pod-template-hash": hash_},
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": deployment_name,
                    "uid": f"uid-deployment-{deployment_name}",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": deployment_name, "pod-template-hash": hash_}},
            "template": template(image, app=deployment_name, hash_=hash_),
        },
        "status": {"replicas": replicas, "readyReplicas": replicas},
    }


def pod_metrics(
    name: str, memory: str, cpu: str = "250m", container: str = "backend"
) -> dict[str, Any]:
    return {
        "apiVersion": "metrics.k8s.io/v1beta1",
        "kind": "PodMetrics",
        "metadata": {
            "name": name,
            "namespace": "lotolink",
            "labels": {"app": "lotolink-backend"},
            "creationTimestamp": stamp(now()),
        },
        "timestamp": stamp(now()),
        "window": "15.01s",
        "containers": [{"name": container, "usage": {"cpu": cpu, "memory": memory}}],
    }


def event(
    obj: str,
    reason: str,
    message: str,
    *,
    type_: str = "Normal",
    minutes_ago: float = 1,
    kind: str = "Pod",
    count: int = 1,
) -> dict[str, Any]:
    when = ago(minutes=minutes_ago)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{obj}.{abs(hash((obj, reason, message))) % 10**12:x}",
            "namespace": "lotolink",
        },
        "involvedObject": {"kind": kind, "name": obj, "namespace": "lotolink"},
        "reason": reason,
        "message": message,
        "type": type_,
        "count": count,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "source": {"component": "kubelet", "host": "node-a"},
    }


def secret(name: str, values: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "lotolink"},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in values.items()},
    }


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


__all__ = ["ExecResult", "KubeServer", "Recorded"]
