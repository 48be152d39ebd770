"""banca.hmac_match: is the HMAC secret the platform signs a banca's traffic with
the one registered for that banca? Compared by fingerprint, never revealed.

The step runs once per banca target. Two values are compared:

- configured: what the platform uses, a key of a Kubernetes Secret (by default
  `lotolink-banca-hmac` in `lotolink`), read with the official client;
- registered: what was agreed with the banca, held where the workers run in the
  environment variable named for that banca.

Each is reduced to its fingerprint, the first 8 hex digits of its SHA-256; the
values themselves never reach the output, the result or a log.

Step parameters:

- `secret` (default `lotolink-banca-hmac`): the Secret holding the configured values;
- `namespace` (default `lotolink`);
- `key_option` (default `hmac_key`): the banca target's option naming its key in
  that Secret; a target without it uses its own name as the key;
- `env_option` (default `hmac_env`): the banca target's option naming the
  environment variable of its registered secret; a target without it uses
  `LOTOOPS_TARGET_BANCA_HMAC_<NAME>` (its name upper-cased, non-alphanumerics as `_`);
- `kubernetes`: how to reach the cluster, as a Kubernetes target gives it:
  `url`, `token_env` (the variable holding a bearer token), `kubeconfig`,
  `context`, `in_cluster`, `verify_tls`.

Outcome: "ok" when the fingerprints match; "failing" with the evidence
`hmac_mismatch` when they differ; a ProbeError (nothing compared) when either
value is missing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .base import (
    Outcome,
    Probe,
    ProbeError,
    ProbeResult,
    ProbeTimeout,
    TransientProbeError,
    register,
)
from .kubernetes import _connection_error, _status_message, api_client
from .redact import redact
from .secrets import read_secret_env

CONNECTION_KEYS = {"url", "token_env", "kubeconfig", "context", "in_cluster", "verify_tls"}


def fingerprint(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()[:8]


@dataclass
class HmacMatchParams:
    secret: str = "lotolink-banca-hmac"  # noqa: S105  (a Secret's name)
    namespace: str = "lotolink"
    key_option: str = "hmac_key"
    env_option: str = "hmac_env"
    kubernetes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.kubernetes) - CONNECTION_KEYS
        if unknown:
            raise ProbeError(
                f"parameter kubernetes has unknown key(s): {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(CONNECTION_KEYS))})"
            )


@register
class HmacMatch(Probe):
    name = "banca.hmac_match"
    target_kind = "banca"
    Params = HmacMatchParams
    # The cluster connection carries a token (token_env) or a kubeconfig's credentials.
    secret_params = ("kubernetes",)

    def run(self) -> ProbeResult:
        p: HmacMatchParams = self.params
        options = self.target.options or {}
        banca = self.target.name
        key = str(options.get(p.key_option) or banca)
        env = str(
            options.get(p.env_option)
            or "LOTOOPS_TARGET_BANCA_HMAC_" + re.sub(r"\W", "_", banca).upper()
        )
        registered = read_secret_env(env, f"banca {banca}'s {p.env_option}")
        if not registered:
            raise ProbeError(
                f"the secret registered for banca {banca} is not set where the workers run: "
                f"environment variable {env} is empty"
            )
        configured = self._configured(key)
        token = read_secret_env(str(p.kubernetes.get("token_env") or ""), "kubernetes token_env")
        hidden = [registered, configured.decode("utf-8", "replace"), token]
        ours, theirs = fingerprint(configured), fingerprint(registered.encode())
        where = f"key {key} of Secret {p.secret} ({p.namespace})"
        self.emit(f"configured in the platform ({where}): sha256 {ours}…")
        self.emit(f"registered for banca {banca} (${env}): sha256 {theirs}…")
        data = {"banca": banca, "key": key, "env": env, "configured": ours, "registered": theirs}
        if ours == theirs:
            summary = (
                f"banca {banca}: the configured HMAC secret matches the registered one ({ours})"
            )
            return ProbeResult(Outcome.OK, redact(summary, hidden), data)
        summary = (
            f"banca {banca}: the configured HMAC secret ({ours}) differs from the registered "
            f"one ({theirs}): signatures will not verify"
        )
        if configured.strip() == registered.encode().strip():
            # Said without showing either: a newline kept by `kubectl create secret
            # --from-file` is the usual cause.
            data["whitespace_only"] = True
            summary += " (they differ only by surrounding whitespace, e.g. a trailing newline)"
        return ProbeResult(
            Outcome.FAILING, redact(summary, hidden), data, {"hmac_mismatch": dict(data)}
        )

    def _configured(self, key: str) -> bytes:
        p: HmacMatchParams = self.params
        conn = p.kubernetes
        if not conn:
            raise ProbeError(
                "give the cluster in the step's kubernetes parameter (url, token_env, …)"
            )
        connect = max(0.5, min(10.0, self.timeout / 3))
        api = api_client(
            "kubernetes",
            str(conn.get("url") or ""),
            read_secret_env(str(conn.get("token_env") or ""), "kubernetes token_env"),
            {k: v for k, v in conn.items() if k not in ("url", "token_env")},
            connect_timeout=connect,
        )
        deadline = time.monotonic() + self.timeout
        try:
            raw = client.CoreV1Api(api).read_namespaced_secret(
                p.secret,
                p.namespace,
                _preload_content=False,
                _request_timeout=(connect, max(0.1, deadline - time.monotonic())),
            )
            body = json.loads(raw.data)
            raw.release_conn()
        except ApiException as exc:
            if exc.status == 404:
                raise ProbeError(
                    f"Secret {p.secret} not found in namespace {p.namespace}"
                ) from None
            if exc.status == 403:
                raise ProbeError(f"forbidden (403): {_status_message(exc)}") from None
            if exc.status == 401:
                raise ProbeError(
                    "the API server refused the credentials (401 Unauthorized)"
                ) from None
            if (exc.status or 0) >= 500 or exc.status == 429:
                raise TransientProbeError(f"the API server answered {exc.status}") from None
            raise ProbeError(
                f"reading Secret {p.secret}: {exc.status} {_status_message(exc)}"
            ) from None
        except urllib3.exceptions.ReadTimeoutError:
            raise ProbeTimeout(f"the API server did not answer within {self.timeout:g} s") from None
        except urllib3.exceptions.MaxRetryError as exc:
            raise _connection_error("kubernetes", str(conn.get("url")), exc.reason) from None
        finally:
            api.close()
        value = (body.get("data") or {}).get(key)
        keys = sorted((body.get("data") or {}).keys())
        del body
        if value is None:
            raise ProbeError(
                f"Secret {p.secret} has no key {key} for banca {self.target.name} "
                f"(it has: {', '.join(keys) or 'none'})"
            )
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ProbeError(f"key {key} of Secret {p.secret} is not valid base64") from None
