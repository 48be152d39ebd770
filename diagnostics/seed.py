"""Seed the runbooks and their steps from diagnostics/runbooks/*.toml.

Idempotent: runbooks and steps are created when their key is missing; what an
admin edited since is left alone."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from django.db import transaction

from .models import Runbook, RunbookStep

RUNBOOK_DIR = Path(__file__).resolve().parent / "runbooks"
STEP_FIELDS = (
    "title",
    "kind",
    "probe",
    "target_kind",
    "params",
    "finds",
    "recommended_by",
    "command",
    "timeout_seconds",
    "every_target",
)


def load(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as handle:
        return tomllib.load(handle)["runbook"]


@transaction.atomic
def seed_runbooks(directory: Path = RUNBOOK_DIR) -> dict[str, int]:
    created = {"runbooks": 0, "steps": 0}
    order = 0
    for path in sorted(directory.glob("*.toml")):
        for data in load(path):
            order += 1
            runbook, made = Runbook.objects.get_or_create(
                key=data["key"],
                defaults={
                    "title": data["title"],
                    "section": data["section"],
                    "categories": data.get("categories", []),
                    "symptoms": data.get("symptoms", ""),
                    "order": order,
                    "recovery_checks": data.get("recovery_checks", []),
                },
            )
            created["runbooks"] += made
            existing = set(runbook.steps.values_list("key", flat=True))
            for index, step in enumerate(data.get("step", [])):
                if step["key"] in existing or RunbookStep.objects.filter(key=step["key"]).exists():
                    continue
                values = {name: step[name] for name in STEP_FIELDS if name in step}
                RunbookStep.objects.create(runbook=runbook, key=step["key"], order=index, **values)
                created["steps"] += 1
    return created
