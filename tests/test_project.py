"""Project set-up: every setting documented, the compose file valid."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")


def variables_read_by_the_code() -> set[str]:
    names: set[str] = set()
    pattern = re.compile(
        r"""(?:env_\w+|os\.environ\.get|os\.environ\.setdefault)\(\s*["']([A-Z][A-Z0-9_]+)["']"""
    )
    for path in [
        *ROOT.glob("lotoops/*.py"),
        *ROOT.glob("incidents/**/*.py"),
        *ROOT.glob("diagnostics/**/*.py"),
    ]:
        names |= set(pattern.findall(path.read_text()))
    return names - {"DJANGO_SETTINGS_MODULE"}


def test_every_variable_is_in_env_example():
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    read = variables_read_by_the_code()
    assert {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY", "ALLOWED_HOSTS"} <= read
    assert read - documented == set()


def test_the_readme_documents_the_production_settings():
    readme = (ROOT / "README.md").read_text()
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY", "ALLOWED_HOSTS"):
        assert f"`{name}`" in readme, name


def test_docker_compose_is_valid_against_the_compose_spec():
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    services = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"postgres", "redis", "web", "beat"} <= set(services)
    # A worker per queue class (diagnostics/queues.py), paging never behind checks.
    queues = {
        name: next(a for a in services[name]["command"] if a.startswith("--queues="))
        for name in ("worker-paging", "worker-checks", "worker-long")
    }
    assert queues == {
        "worker-paging": "--queues=paging",
        "worker-checks": "--queues=checks,celery",
        "worker-long": "--queues=long",
    }


def test_the_compose_check_catches_an_invalid_file(tmp_path):
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  web:\n    image: [1, 2]\n    restart: sometimes-maybe\n")
    result = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
