"""Production settings pass Django's deployment checklist: the compose file's
environment, run through `manage.py check --deploy`, leaves no warning."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parent.parent


def compose_environment() -> dict[str, str]:
    """The app's environment in docker-compose.yml, `${NAME:-default}` resolved
    to its default, and a real-looking SECRET_KEY (the file requires one)."""
    app = YAML(typ="safe").load((ROOT / "docker-compose.yml").read_text())["x-app"]
    env: dict[str, str] = {}
    for name, value in app["environment"].items():
        value = str(value)
        value = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)
        env[name] = value
    env["SECRET_KEY"] = secrets.token_urlsafe(50)
    env["ALLOWED_HOSTS"] = "ops.lotolink.example"
    return env


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SECURE_", "DATABASE_", "REDIS_", "CELERY_", "DJANGO_"))
        and k not in {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "BEHIND_TLS_PROXY"}
    }
    env = base | env
    env.pop("DATABASE_URL", None)  # no server needed to check settings
    env.pop("REDIS_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.cjk_font
def test_the_production_compose_settings_pass_check_deploy():
    env = compose_environment()
    assert env["SECURE_COOKIES"] == "true" and env["BEHIND_TLS_PROXY"] == "true"
    result = check_deploy(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_names_what_a_production_setting_leaves_out():
    env = compose_environment()
    for name in ("SECURE_HSTS_SECONDS", "SECURE_SSL_REDIRECT", "SECURE_COOKIES"):
        env.pop(name)
    result = check_deploy(env)
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr + result.stdout, warning
