"""The layout's rules, checked: arrows point one way (import-linter), every domain
signal has listeners, every probe module loads, and every runbook step has its
probe."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from diagnostics import signals as diagnostics_signals
from diagnostics.models import CheckRun, RunbookStep, StepKind
from diagnostics.probes import base
from diagnostics.seed import seed_runbooks
from incidents import signals as incident_signals
from incidents.models import Incident

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_imports_keep_the_layers():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    for package in contract["root_packages"]:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with (tmp_path / "incidents" / "services.py").open("a") as f:
        f.write("\n\ndef _sneaky() -> None:\n    from diagnostics import services  # noqa: F401\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "incidents.services -> diagnostics.services" in result.stdout


@pytest.mark.parametrize(
    ("signal", "sender"),
    [(s, Incident) for s in incident_signals.ALL]
    + [(s, CheckRun) for s in diagnostics_signals.ALL],
)
def test_every_domain_signal_has_its_listeners(signal, sender):
    assert signal.has_listeners(sender)


def test_every_probe_module_is_imported_at_start_up():
    modules = {cls.__module__ for cls in base.REGISTRY.values()}
    for name in ("http", "postgres", "redis", "rabbitmq", "prometheus", "stripe", "kubernetes"):
        assert f"diagnostics.probes.{name}" in modules


@pytest.mark.django_db
def test_every_step_of_the_seeded_runbook_has_its_probe():
    """No step says "not available yet" (the manual ones are shown to copy)."""
    seed_runbooks()
    steps = RunbookStep.objects.exclude(kind=StepKind.MANUAL)
    assert steps.count() >= 45
    assert {step.key for step in steps if step.probe_class() is None} == set()
    assert all(step.available for step in steps)
