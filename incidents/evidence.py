"""Evidence with a chain of custody: files (database dumps, log exports) stored on an
incident with the SHA-256 and size they had when stored, who stored them and when.

Files live under settings.EVIDENCE_ROOT, one directory per incident
(`incident-<pk>/`), directories 0700 and files 0600, under a name of our own making
(a random prefix and the sanitised file name), so nothing a probe or a user names
can reach outside the root. `verify()` recomputes every hash and says which file
changed or went missing. Storing, verifying and downloading are each recorded on
the incident's timeline.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from .models import EventKind, EvidenceFile, Incident
from .services import IncidentError
from .timeline import actor_name, append_event

CHUNK = 1024 * 1024
NAME_MAX = 120
DIR_MODE = 0o700
FILE_MODE = 0o600


class EvidenceError(IncidentError):
    """A file could not be stored as evidence (nothing was recorded)."""


class Check(NamedTuple):
    """One file's verification: `ok` when it is there with its recorded hash and size."""

    file: EvidenceFile
    ok: bool
    reason: str


# --- names and paths ---------------------------------------------------------------


def safe_name(name: str) -> str:
    """A file name that is only a name: no directories, no leading dots, only
    letters, digits, dots, dashes and underscores, at most NAME_MAX characters."""
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip(".-")
    cleaned = re.sub(r"\.{2,}", ".", cleaned)
    if len(cleaned) > NAME_MAX:
        stem, dot, ext = cleaned.rpartition(".")
        if dot and 0 < len(ext) <= 10:
            cleaned = stem[: NAME_MAX - len(ext) - 1] + "." + ext
        else:
            cleaned = cleaned[:NAME_MAX]
    return cleaned or "evidence"


def evidence_root() -> Path:
    return Path(settings.EVIDENCE_ROOT).resolve()


def absolute_path(file: EvidenceFile) -> Path:
    """Where the file is on disk; refuses a stored path that leads outside the root."""
    root = evidence_root()
    path = (root / file.path).resolve()
    if not path.is_relative_to(root) or path == root:
        raise EvidenceError(f"{file.name}: its stored path leads outside the evidence store")
    return path


def _private_dir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)  # mkdir's mode is masked by the umask


def _chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def file_digest(path: Path) -> tuple[str, int]:
    """(SHA-256 hex, size in bytes), reading the file in chunks."""
    digest, size = hashlib.sha256(), 0
    for chunk in _chunks(path):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


# --- storing -------------------------------------------------------------------------


def store_file(
    incident: Incident,
    *,
    name: str,
    source_path: str | os.PathLike[str],
    content_type: str,
    actor: AbstractBaseUser | None,
    check_run_id: int | None = None,
) -> EvidenceFile:
    """Copy `source_path` into the evidence store (hashing it on the way), record it
    and put it on the timeline. The source is left in place (the caller removes it).
    EvidenceError when the source cannot be read or the copy cannot be written."""
    source = Path(source_path)
    if not source.is_file():
        raise EvidenceError(f"{safe_name(name)}: the file to store is missing ({source.name})")
    clean = safe_name(name)
    root = evidence_root()
    folder = root / f"incident-{incident.pk}"
    try:
        _private_dir(root)
        _private_dir(folder)
    except OSError as exc:
        raise EvidenceError(f"cannot create the evidence folder: {exc.strerror}") from None
    stored = folder / f"{secrets.token_hex(8)}-{clean}"
    digest, size = hashlib.sha256(), 0
    try:
        fd = os.open(stored, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            for chunk in _chunks(source):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        stored.unlink(missing_ok=True)
        raise EvidenceError(f"{clean}: cannot store it: {exc.strerror or exc}") from None
    try:
        with transaction.atomic():
            file = EvidenceFile.objects.create(
                incident=incident,
                name=clean,
                path=stored.relative_to(root).as_posix(),
                sha256=digest.hexdigest(),
                size=size,
                content_type=(content_type or "application/octet-stream")[:100],
                created_by=actor,
                created_at=timezone.now(),
                check_run_id=check_run_id,
            )
            append_event(
                incident,
                EventKind.EVIDENCE,
                f"Evidence stored: {clean} ({human_size(size)}, SHA-256 {file.sha256}) "
                f"by {actor_name(actor)}",
                actor=actor,
                data={
                    "evidence": file.pk,
                    "name": clean,
                    "sha256": file.sha256,
                    "size": size,
                    "run": check_run_id,
                    "action": "stored",
                },
            )
    except BaseException:
        stored.unlink(missing_ok=True)
        raise
    return file


# --- verifying -----------------------------------------------------------------------


def check_file(file: EvidenceFile) -> Check:
    try:
        path = absolute_path(file)
    except EvidenceError as exc:
        return Check(file, False, str(exc))
    if not path.is_file():
        return Check(file, False, f"{file.name}: missing from the evidence store")
    try:
        digest, size = file_digest(path)
    except OSError as exc:
        return Check(file, False, f"{file.name}: cannot be read ({exc.strerror or exc})")
    if digest != file.sha256:
        detail = f"SHA-256 is now {digest}, recorded {file.sha256}"
        if size != file.size:
            detail += f"; size {size} bytes, recorded {file.size}"
        return Check(file, False, f"{file.name}: changed ({detail})")
    return Check(file, True, f"{file.name}: intact (SHA-256 {file.sha256})")


def verify(incident: Incident | None = None) -> list[Check]:
    """Recompute the hash of every evidence file (of one incident, or all of them)."""
    files = EvidenceFile.objects.select_related("created_by", "incident").order_by(
        "incident_id", "id"
    )
    if incident is not None:
        files = files.filter(incident=incident)
    return [check_file(f) for f in files]


def record_verification(
    incident: Incident, checks: Iterable[Check], *, actor: AbstractBaseUser | None
) -> None:
    """Put one verification's outcome on the incident's timeline."""
    checks = [c for c in checks if c.file.incident_id == incident.pk]
    bad = [c for c in checks if not c.ok]
    if not checks:
        message = f"Evidence verified by {actor_name(actor)}: no files stored"
    elif bad:
        message = f"Evidence verification FAILED ({actor_name(actor)}): " + "; ".join(
            c.reason for c in bad
        )
    else:
        message = f"Evidence verified by {actor_name(actor)}: {len(checks)} of {len(checks)} intact"
    append_event(
        incident,
        EventKind.EVIDENCE,
        message,
        actor=actor,
        data={
            "action": "verified",
            "ok": not bad,
            "files": {str(c.file.pk): c.ok for c in checks},
        },
    )


# --- downloading -----------------------------------------------------------------------


def record_download(file: EvidenceFile, *, actor: AbstractBaseUser) -> None:
    append_event(
        file.incident,
        EventKind.EVIDENCE,
        f"Evidence {file.name} downloaded by {actor_name(actor)}",
        actor=actor,
        data={"action": "downloaded", "evidence": file.pk, "sha256": file.sha256},
    )
