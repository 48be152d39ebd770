"""What every probe is: one small class per backend operation.

A probe gets a Target (where to look, with its secret read from the
environment), typed parameters, a timeout and an `emit` callback for output
lines. `run()` returns a ProbeResult. Probes touch the platform, never our
database; the task stores what they return.

Errors: raise ProbeError for what retrying cannot fix (wrong password,
connection refused, a malformed parameter, a missing object) and
TransientProbeError for what may pass (a timeout while connecting, a
server that is starting, a dropped connection). Anything else is a bug and
is recorded as an error too.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


class Outcome:
    OK = "ok"
    WARNING = "warning"
    FAILING = "failing"
    ERROR = "error"
    ALL = (OK, WARNING, FAILING, ERROR)


class ProbeError(Exception):
    """A failure retrying cannot fix. The message is shown to the responder."""


class TransientProbeError(ProbeError):
    """A failure that may pass: the task retries with backoff."""


class ProbeTimeout(ProbeError):
    """The check did not finish within its timeout (recorded as timed out)."""


@dataclass(frozen=True)
class ProbeFile:
    """A file a probe produced (a log export, a database dump), written to a
    temporary path. The engine, not the probe, stores it on the incident as
    evidence (with its SHA-256, size, who and when) and removes the temporary file."""

    name: str  # the file name shown and offered for download, e.g. "backend-logs.txt"
    path: str  # where the probe wrote it
    content_type: str = "application/octet-stream"


@dataclass
class ProbeResult:
    outcome: str
    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    # Evidence key -> details, e.g. {"long_running_queries": {"pids": [4121, 4188]}}
    evidence: dict[str, Any] = field(default_factory=dict)
    files: list[ProbeFile] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.outcome not in Outcome.ALL:
            raise ValueError(f"unknown outcome {self.outcome!r}")


class TargetLike(Protocol):
    """What a probe may know of a target (diagnostics.models.Target satisfies it)."""

    name: str
    kind: str
    url: str
    options: dict[str, Any]

    def secret(self) -> str: ...

    def url_with_secret(self) -> str: ...


Emit = Callable[[str], None]


@dataclass
class NoParams:
    pass


@dataclass(frozen=True)
class ParamChoice:
    """A parameter the responder sets when reviewing an action, declared by the
    probe so the generic action form needs no knowledge of any backend.

    Either `options` (value, label) pairs, usually taken from what a diagnostic
    found (the pid from `long_running_queries`): the responder picks one, never
    types it; or a whole number within `minimum`..`maximum` (a replica count);
    or, with `text=True`, free text that the probe's `Params` then validates
    (addresses to block)."""

    name: str
    label: str
    help: str = ""
    options: tuple[tuple[Any, str], ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    initial: Any = None
    text: bool = False


class Probe:
    """Subclass, set the class attributes, define `Params` (a dataclass) and `run()`.

    Actions also define `plan()`: the exact sentence of what they will do, shown
    before the responder confirms ("terminate 7 connections idle for more than
    30 min on lotolink-db").
    """

    name: ClassVar[str]
    target_kind: ClassVar[str]
    action: ClassVar[bool] = False
    Params: ClassVar[type] = NoParams
    # The parameters that name a secret (`*_env`), or say where a secret is sent (a
    # URL, a connection object such as `kubernetes`): only superusers set them, and
    # the secret is bound to where they point (RunbookStep.secret_binding).
    secret_params: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, target: TargetLike, params: Any, *, timeout: float, emit: Emit | None = None
    ) -> None:
        self.target = target
        self.params = params
        self.timeout = timeout
        self.emit: Emit = emit or (lambda line: None)
        # What an action's plan bound (the exact rows it names, e.g. the pids to
        # terminate): `plan()` fills it, the review adds it to the confirmed params, so
        # the run does what was reviewed and nothing that turned up since.
        self.bound: dict[str, Any] = {}

    @classmethod
    def build(
        cls,
        target: TargetLike,
        raw_params: dict[str, Any] | None,
        *,
        timeout: float,
        emit: Emit | None = None,
    ) -> Probe:
        return cls(target, parse_params(cls.Params, raw_params or {}), timeout=timeout, emit=emit)

    @classmethod
    def choices(cls, step_params: dict[str, Any], evidence: dict[str, Any]) -> list[ParamChoice]:
        """The parameters a responder sets when reviewing this action, given the
        step's parameters and the evidence found on the incident so far
        (evidence key -> {"details": ..., ...}). None by default."""
        return []

    def run(self) -> ProbeResult:
        raise NotImplementedError

    def plan(self) -> str:
        raise NotImplementedError(f"{self.name} is not an action")


def seconds_words(seconds: float) -> str:
    """A threshold as a title says it: 5 min, 2 h, 90 s, 0.5 s."""
    value = float(seconds)
    if value >= 3600 and value % 3600 == 0:
        return f"{value / 3600:g} h"
    if value >= 60 and value % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:g} s"


REGISTRY: dict[str, type[Probe]] = {}


def register(cls: type[Probe]) -> type[Probe]:
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        raise ValueError(f"two probes named {cls.name}")
    REGISTRY[cls.name] = cls
    return cls


def get_probe(name: str) -> type[Probe] | None:
    """The probe class, or None when that probe is not implemented (yet). Every
    backend module is imported (so registered) by DiagnosticsConfig.ready."""
    return REGISTRY.get(name)


def parse_params(params_class: type, raw: dict[str, Any]) -> Any:
    """Build the probe's typed params from a step's JSON, refusing unknown keys and
    values of the wrong type with a clear ProbeError."""
    if not isinstance(raw, dict):
        raise ProbeError("parameters must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(params_class)}
    unknown = set(raw) - set(fields)
    if unknown:
        raise ProbeError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(params_class)
    values: dict[str, Any] = {}
    for name, value in raw.items():
        values[name] = _coerce(name, value, hints[name])
    try:
        return params_class(**values)
    except TypeError as exc:
        raise ProbeError(f"missing parameter: {exc}") from None


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(name, value, options[0])
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ProbeError(f"parameter {name} must be a list")
        return [_coerce(f"{name}[]", v, item) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ProbeError(f"parameter {name} must be an object")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ProbeError(f"parameter {name} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProbeError(f"parameter {name} must be a whole number, not {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ProbeError(f"parameter {name} must be a number, not {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ProbeError(f"parameter {name} must be text")
        return value
    return value
