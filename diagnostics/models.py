"""Runbooks, steps, targets and check runs arrive with the runbook engine; for now
the workers' heartbeat, which /healthz reads to say whether a worker is up."""

from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    hostname = models.CharField(max_length=200, unique=True)
    seen_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.hostname} at {self.seen_at:%H:%M:%S}"
