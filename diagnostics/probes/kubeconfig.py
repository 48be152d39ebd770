"""Which kubeconfig files a Kubernetes target may name: only files inside
KUBECONFIG_DIR (symbolic links resolved, never `..` out of it), and never one whose
user runs a command (`exec:` plugins, `auth-provider:`): the workers would run it,
with their environment, for whoever edited the target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from .base import ProbeError

COMMAND_KEYS = ("exec", "auth-provider")


def kubeconfig_dir() -> Path:
    return Path(settings.KUBECONFIG_DIR).resolve()


def kubeconfig_path(value: Any) -> Path:
    """The file a target's `kubeconfig` option names, resolved, refused (ProbeError)
    outside KUBECONFIG_DIR. A relative name is taken inside that folder."""
    if not isinstance(value, str) or not value.strip():
        raise ProbeError("kubeconfig must be a file name in KUBECONFIG_DIR")
    folder = kubeconfig_dir()
    raw = Path(value.strip())
    if ".." in raw.parts:
        raise ProbeError(f"kubeconfig {value}: '..' is not allowed; name a file in {folder}")
    path = (raw if raw.is_absolute() else folder / raw).resolve()
    if not path.is_relative_to(folder) or path == folder:
        raise ProbeError(
            f"kubeconfig {value} is outside {folder} (KUBECONFIG_DIR): "
            "only files in that folder may be used"
        )
    return path


def check_kubeconfig(value: Any) -> Path:
    """The kubeconfig file, checked: in KUBECONFIG_DIR, present, YAML, and no user
    that runs a command. ProbeError (naming the user) otherwise."""
    path = kubeconfig_path(value)
    if not path.is_file():
        raise ProbeError(f"kubeconfig file {path} does not exist")
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeError, yaml.YAMLError) as exc:
        raise ProbeError(f"kubeconfig file {path} cannot be read as YAML: {exc}") from None
    users = doc.get("users") if isinstance(doc, dict) else None
    for entry in users or []:
        user = entry.get("user") if isinstance(entry, dict) else None
        if not isinstance(user, dict):
            continue
        for key in COMMAND_KEYS:
            if user.get(key):
                name = entry.get("name", "?")
                raise ProbeError(
                    f"kubeconfig file {path}: user {name} has {key}: a kubeconfig that runs "
                    "a command is refused (give the user a token or a client certificate)"
                )
    return path
