"""Probes for testing the engine itself (claiming, streaming, retries, timeouts,
redaction) without any platform server: they do what their params say."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from diagnostics.probes.base import (
    Probe,
    ProbeError,
    ProbeResult,
    ProbeTimeout,
    TransientProbeError,
    register,
)


@dataclass
class EchoParams:
    lines: int = 3
    delay: float = 0.0
    outcome: str = "ok"
    evidence: list[str] = field(default_factory=list)
    fail: str = ""
    leak_secret: bool = False
    big_output: int = 0


@register
class EchoProbe(Probe):
    name = "test.echo"
    target_kind = "http"
    Params = EchoParams

    def run(self) -> ProbeResult:
        p = self.params
        for n in range(p.lines):
            self.emit(f"line {n}")
            time.sleep(p.delay)
        if p.big_output:
            self.emit("x" * p.big_output)
        if p.leak_secret:
            self.emit(f"connecting with token {self.target.secret()}")
        if p.fail == "transient":
            raise TransientProbeError("server is starting up")
        if p.fail == "permanent":
            raise ProbeError("password authentication failed for user lotolink")
        if p.fail == "timeout":
            raise ProbeTimeout(f"no answer within {self.timeout:g} s")
        if p.fail == "bug":
            raise KeyError("oops")
        summary = f"{p.lines} lines"
        if p.leak_secret:
            summary += f" (token {self.target.secret()})"
        return ProbeResult(
            p.outcome,
            summary,
            data={"lines": p.lines, "token": self.target.secret() if p.leak_secret else ""},
            evidence={key: {"pids": [4121, 4188]} for key in p.evidence},
        )


@dataclass
class ActionParams:
    count: int = 7


@register
class CountedAction(Probe):
    name = "test.restart"
    target_kind = "http"
    action = True
    Params = ActionParams

    def plan(self) -> str:
        return f"restart {self.params.count} workers on {self.target.name}"

    def run(self) -> ProbeResult:
        self.emit(f"restarting {self.params.count} workers")
        return ProbeResult("ok", f"restarted {self.params.count} workers")
