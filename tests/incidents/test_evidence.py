"""Evidence with a chain of custody: files stored on an incident with their SHA-256,
size, who and when; verification names any file that changed or went missing;
downloads and verification need their own permissions on top of seeing the
incident and are audited on the timeline; the
incident's report lists the evidence."""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from guardian.shortcuts import assign_perm
from pypdf import PdfReader

from incidents import evidence
from incidents.models import EventKind, EvidenceFile
from incidents.reporting import exports
from tests import factories

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
CONTENT = b"2026-11-29T03:12:09Z POST /login 401 user=admin from 203.0.113.7\n" * 500


@pytest.fixture
def store(settings, tmp_path: Path) -> Path:
    settings.EVIDENCE_ROOT = tmp_path / "evidence"
    return settings.EVIDENCE_ROOT


@pytest.fixture
def secret_incident(responder):
    """A restricted (security) incident that only its declarer, ana, may see."""
    return factories.declare(actor=responder, category="security", title="Credential leak")


def source(tmp_path: Path, content: bytes = CONTENT, name: str = "export.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def stored(incident, responder, tmp_path, *, name: str = "backend-logs.txt") -> EvidenceFile:
    return evidence.store_file(
        incident,
        name=name,
        source_path=source(tmp_path),
        content_type="text/plain",
        actor=responder,
        check_run_id=41,
    )


def evidence_events(incident) -> list[str]:
    return list(
        incident.timeline.filter(kind=EventKind.EVIDENCE)
        .order_by("id")
        .values_list("message", flat=True)
    )


# --- storing -------------------------------------------------------------------------


def test_a_stored_file_keeps_its_hash_size_author_and_time_privately(
    store, secret_incident, responder, tmp_path
):
    file = stored(secret_incident, responder, tmp_path)
    assert file.sha256 == hashlib.sha256(CONTENT).hexdigest()
    assert file.size == len(CONTENT)
    assert file.created_by == responder and file.created_at and file.check_run_id == 41
    assert file.name == "backend-logs.txt" and file.content_type == "text/plain"
    on_disk = store / file.path
    assert on_disk.read_bytes() == CONTENT
    assert file.path.startswith(f"incident-{secret_incident.pk}/")
    assert stat.S_IMODE(on_disk.stat().st_mode) == 0o600
    assert stat.S_IMODE(on_disk.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    (message,) = evidence_events(secret_incident)
    assert f"backend-logs.txt ({evidence.human_size(len(CONTENT))}, SHA-256 {file.sha256})" in (
        message
    )
    assert message.endswith("by ana")
    assert (tmp_path / "export.txt").exists()  # the caller removes its own temp file


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("../../../etc/cron.d/evil", "evil"),
        ("..\\..\\windows\\system32", "system32"),
        (".hidden", "hidden"),
        ("dump of lotolink; rm -rf *.sql", "dump-of-lotolink-rm--rf-.sql"),
        ("..", "evidence"),
        ("", "evidence"),
    ],
)
def test_a_file_name_cannot_leave_the_store(store, incident, responder, tmp_path, given, kept):
    file = stored(incident, responder, tmp_path, name=given)
    assert file.name == kept
    on_disk = (store / file.path).resolve()
    assert on_disk.parent == (store / f"incident-{incident.pk}").resolve()
    assert on_disk.name.endswith("-" + kept)


def test_a_long_name_is_cut_keeping_its_extension():
    name = evidence.safe_name("x" * 300 + ".dump")
    assert len(name) == evidence.NAME_MAX and name.endswith(".dump")


def test_a_missing_source_is_refused_and_nothing_is_recorded(store, incident, responder, tmp_path):
    with pytest.raises(evidence.EvidenceError, match="missing"):
        evidence.store_file(
            incident,
            name="gone.txt",
            source_path=tmp_path / "nope.txt",
            content_type="text/plain",
            actor=responder,
        )
    assert not EvidenceFile.objects.exists()
    assert evidence_events(incident) == []


def test_an_unwritable_store_is_refused_and_nothing_is_recorded(
    settings, incident, responder, tmp_path
):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings.EVIDENCE_ROOT = blocker / "evidence"
    with pytest.raises(evidence.EvidenceError, match="cannot create the evidence folder"):
        stored(incident, responder, tmp_path)
    assert not EvidenceFile.objects.exists()


# --- verifying -----------------------------------------------------------------------


@pytest.fixture
def three_files(store, incident, responder, tmp_path) -> list[EvidenceFile]:
    return [stored(incident, responder, tmp_path, name=f"file-{n}.txt") for n in range(3)]


def test_untouched_files_verify(three_files, incident):
    checks = evidence.verify(incident)
    assert [(c.file, c.ok) for c in checks] == [(f, True) for f in three_files]


def test_a_tampered_file_fails_verification_and_is_named(three_files, store, incident):
    with open(store / three_files[1].path, "r+b") as handle:
        handle.seek(100)
        handle.write(b"X")  # one byte, same size
    checks = evidence.verify(incident)
    assert [c.ok for c in checks] == [True, False, True]
    assert checks[1].reason.startswith("file-1.txt: changed (SHA-256 is now ")
    assert "size" not in checks[1].reason


def test_a_missing_file_fails_verification_and_is_named(three_files, store, incident):
    os.unlink(store / three_files[2].path)
    checks = evidence.verify(incident)
    assert [c.ok for c in checks] == [True, True, False]
    assert checks[2].reason == "file-2.txt: missing from the evidence store"


def test_a_stored_path_leading_outside_the_store_fails(three_files, incident):
    EvidenceFile.objects.filter(pk=three_files[0].pk).update(path="../../etc/passwd")
    check = evidence.verify(incident)[0]
    assert not check.ok and "outside the evidence store" in check.reason


def test_the_command_passes_when_every_file_is_intact(three_files, incident):
    out = io.StringIO()
    call_command("verify_evidence", stdout=out)
    assert "3 evidence files verified, all intact." in out.getvalue()
    assert evidence_events(incident)[-1] == "Evidence verified by LotoOps: 3 of 3 intact"


def test_the_command_fails_naming_the_changed_and_the_missing_file(
    three_files, store, incident, responder, tmp_path
):
    other = factories.declare(actor=responder, title="Another one")
    fine = stored(other, responder, tmp_path, name="other.txt")
    (store / three_files[0].path).write_bytes(b"replaced")
    os.unlink(store / three_files[2].path)
    out = io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("verify_evidence", stdout=out)
    assert "2 of 4 evidence files failed" in str(failed.value)
    assert "file-0.txt (incident #" in str(failed.value)
    assert "file-2.txt (incident #" in str(failed.value)
    assert "other.txt" not in str(failed.value)
    assert f"FAIL #{incident.pk} file-0.txt: changed" in out.getvalue()
    assert f"ok   #{other.pk} {fine.name}: intact" in out.getvalue()
    assert "Evidence verification FAILED" in evidence_events(incident)[-1]
    assert evidence_events(other)[-1].endswith("1 of 1 intact")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_command_exits_non_zero_from_a_shell(store, responder, tmp_path):
    """As cron would run it: a separate process, its exit status and its message."""
    from django.db import connection

    incident = factories.declare(actor=responder, title="Committed for the child process")
    file = stored(incident, responder, tmp_path, name="snapshot.dump")
    db = connection.settings_dict
    env = {
        **os.environ,
        "EVIDENCE_DIR": str(store),
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DATABASE_POOL": "false",
    }
    manage = [sys.executable, str(Path(__file__).resolve().parents[2] / "manage.py")]
    ok = subprocess.run(
        [*manage, "verify_evidence"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    (store / file.path).write_bytes(b"swapped")
    bad = subprocess.run(
        [*manage, "verify_evidence"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0
    assert "snapshot.dump" in bad.stderr and "changed" in bad.stdout


def test_the_command_refuses_an_unknown_incident(store):
    with pytest.raises(CommandError, match="No incident #999999"):
        call_command("verify_evidence", "--incident", "999999")


# --- the page: verify and download ---------------------------------------------------


def url(name: str, incident, **extra: int) -> str:
    return reverse(f"incidents:{name}", kwargs={"pk": incident.pk, **extra})


def test_the_incident_page_lists_the_evidence(client, store, secret_incident, responder, tmp_path):
    file = stored(secret_incident, responder, tmp_path)
    client.force_login(responder)
    page = client.get(url("detail", secret_incident)).content.decode()
    assert 'id="evidence-files"' in page
    assert "backend-logs.txt" in page and file.sha256[:12] in page
    assert url("evidence_download", secret_incident, file_pk=file.pk) in page
    assert url("evidence_verify", secret_incident) in page


def test_verify_on_the_page_names_the_changed_file(client, three_files, store, incident, responder):
    (store / three_files[1].path).write_bytes(b"tampered")
    client.force_login(responder)
    response = client.post(url("evidence_verify", incident), **HX)
    assert response.status_code == 200
    body = response.content.decode()
    assert "Verification failed: file-1.txt changed or missing." in body
    assert "file-1.txt: changed (SHA-256 is now " in body
    assert 'class="evidence-failed"' in body and body.count('class="evidence-ok"') == 2
    assert (
        "Evidence verification FAILED (ana): file-1.txt: changed" in (evidence_events(incident)[-1])
    )
    (store / three_files[1].path).unlink()
    plain = client.post(url("evidence_verify", incident), follow=True)
    assert "Evidence verification failed: file-1.txt: missing" in plain.content.decode()


def test_verify_on_the_page_says_all_intact(client, three_files, incident, responder):
    client.force_login(responder)
    body = client.post(url("evidence_verify", incident), **HX).content.decode()
    assert "Verified: 3 of 3 files intact." in body


def test_someone_without_access_cannot_download_or_verify(
    client, store, secret_incident, responder, other_responder, tmp_path
):
    file = stored(secret_incident, responder, tmp_path)
    before = evidence_events(secret_incident)
    client.force_login(other_responder)
    assert client.get(url("evidence_download", secret_incident, file_pk=file.pk)).status_code == 404
    assert client.post(url("evidence_verify", secret_incident)).status_code == 404
    assert evidence_events(secret_incident) == before


def in_group(name: str, username: str) -> factories.User:
    user = factories.UserFactory(username=username)
    if name:
        user.groups.add(Group.objects.get(name=name))
    return user


@pytest.mark.parametrize(
    ("group", "downloads", "verifies"),
    [
        ("", False, False),  # logged in, no group
        ("Viewers", False, False),
        ("Admins", False, False),
        ("Managers", False, True),
        ("Responders", True, True),
        ("Incident commanders", True, True),
    ],
)
def test_evidence_needs_its_own_permission_on_top_of_seeing_the_incident(
    client, store, incident, responder, tmp_path, group, downloads, verifies
):
    file = stored(incident, responder, tmp_path)
    before = evidence_events(incident)
    client.force_login(in_group(group, "someone"))
    page = client.get(url("detail", incident)).content.decode()
    download = client.get(url("evidence_download", incident, file_pk=file.pk))
    assert download.status_code == (200 if downloads else 403)
    assert (url("evidence_download", incident, file_pk=file.pk) in page) is downloads
    verify = client.post(url("evidence_verify", incident), **HX)
    assert verify.status_code == (200 if verifies else 403)
    assert (url("evidence_verify", incident) in page) is verifies
    written = evidence_events(incident)[len(before) :]
    assert written == (
        (["Evidence backend-logs.txt downloaded by someone"] if downloads else [])
        + (["Evidence verified by someone: 1 of 1 intact"] if verifies else [])
    )


def test_without_the_permission_nothing_reaches_the_timeline(
    client, store, incident, responder, viewer, tmp_path
):
    file = stored(incident, responder, tmp_path)
    before = list(incident.timeline.values_list("id", flat=True))
    client.force_login(viewer)  # logged in, no group: sees the incident
    assert client.get(url("detail", incident)).status_code == 200
    assert client.get(url("evidence_download", incident, file_pk=file.pk)).status_code == 403
    assert client.post(url("evidence_verify", incident)).status_code == 403
    assert client.post(url("evidence_verify", incident), **HX).status_code == 403
    assert list(incident.timeline.values_list("id", flat=True)) == before


def test_the_permission_granted_on_one_incident_is_enough_there_only(
    client, store, incident, responder, viewer, tmp_path
):
    file = stored(incident, responder, tmp_path)
    other = factories.declare(actor=responder, title="Another")
    other_file = stored(other, responder, tmp_path, name="other.txt")
    assign_perm("incidents.download_evidence", viewer, incident)
    assign_perm("incidents.verify_evidence", viewer, incident)
    client.force_login(viewer)
    assert client.get(url("evidence_download", incident, file_pk=file.pk)).status_code == 200
    assert client.post(url("evidence_verify", incident), **HX).status_code == 200
    assert client.get(url("evidence_download", other, file_pk=other_file.pk)).status_code == 403
    assert client.post(url("evidence_verify", other), **HX).status_code == 403


def test_the_migration_grants_evidence_to_an_existing_installs_groups(runbook):
    """An install seeded before the permissions existed: migration 0020 gives its
    groups what seeding gives a new one, and nothing to the others."""
    from django.apps import apps

    migration = importlib.import_module("incidents.migrations.0020_evidence_permissions")
    codenames = ["download_evidence", "verify_evidence"]
    for group in Group.objects.all():
        group.permissions.remove(*group.permissions.filter(codename__in=codenames))
    migration.grant(apps, None)
    granted = {
        group.name: sorted(
            group.permissions.filter(codename__in=codenames).values_list("codename", flat=True)
        )
        for group in Group.objects.all()
    }
    assert granted == {
        "Viewers": [],
        "Responders": codenames,
        "Incident commanders": codenames,
        "Managers": ["verify_evidence"],
        "Admins": [],
    }


def test_a_file_of_another_incident_is_not_served_under_this_one(
    client, store, secret_incident, incident, responder, tmp_path
):
    file = stored(secret_incident, responder, tmp_path)
    client.force_login(responder)
    response = client.get(url("evidence_download", incident, file_pk=file.pk))
    assert response.status_code == 404


def test_a_download_serves_the_file_and_is_audited(
    client, store, secret_incident, responder, other_responder, tmp_path
):
    file = stored(secret_incident, responder, tmp_path)
    assign_perm("incidents.view_incident", other_responder, secret_incident)
    client.force_login(other_responder)
    response = client.get(url("evidence_download", secret_incident, file_pk=file.pk))
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == CONTENT
    assert response["Content-Disposition"] == 'attachment; filename="backend-logs.txt"'
    assert response["X-Content-SHA256"] == file.sha256
    assert evidence_events(secret_incident)[-1] == "Evidence backend-logs.txt downloaded by ben"
    event = secret_incident.timeline.order_by("-id").first()
    assert event.actor == other_responder and event.data["evidence"] == file.pk


def test_a_missing_file_is_not_served(client, store, incident, responder, tmp_path):
    file = stored(incident, responder, tmp_path)
    (store / file.path).unlink()
    client.force_login(responder)
    response = client.get(url("evidence_download", incident, file_pk=file.pk))
    assert response.status_code == 404
    assert not any("downloaded" in m for m in evidence_events(incident))


# --- the report ---------------------------------------------------------------------------


def test_the_report_lists_the_evidence_in_markdown_and_pdf(
    client, store, incident, responder, tmp_path
):
    file = stored(incident, responder, tmp_path)
    client.force_login(responder)
    text = client.get(url("export_md", incident)).content.decode()
    assert "\n## Evidence\n" in text
    assert f"| backend-logs.txt | {file.sha256} | {len(CONTENT)} bytes | ana |" in text
    pdf = PdfReader(io.BytesIO(exports.incident_pdf(exports.incident_report(incident))))
    flat = "".join("".join(p.extract_text() for p in pdf.pages).split())
    assert "Evidence" in flat and f"SHA-256{file.sha256}" in flat
    assert f"backend-logs.txt:{len(CONTENT)}bytes,storedbyana" in flat


def test_a_report_without_evidence_keeps_the_template_sections(client, incident, responder):
    client.force_login(responder)
    assert "## Evidence" not in client.get(url("export_md", incident)).content.decode()
