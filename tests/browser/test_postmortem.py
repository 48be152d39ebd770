"""Resolve an incident in the browser, complete its post-mortem in place, export the
PDF and look at its first page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from incidents import services
from incidents.models import PostMortem
from tests import factories

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def edit_section(page, section: str, field: str, text: str) -> None:
    page.click(f'[data-edit="{section}"]')
    page.wait_for_selector(f"#pm-field-{field}")
    page.fill(f"#pm-field-{field}", text)
    page.click(f'[data-save="{section}"]')
    page.wait_for_selector(f'#pm-{section} [data-edit="{section}"]')


def test_resolve_complete_the_post_mortem_and_export_its_pdf(login, responder, tmp_path):
    import pypdfium2

    incident = factories.declare(
        actor=responder, title="Stripe webhooks failing", severity="P1", commander=responder
    )
    services.acknowledge_incident(incident, actor=responder)
    ana = login(responder)
    ana.goto(f"/incidents/{incident.pk}/")
    ana.wait_for_selector("body[data-live=open]")  # the live stream is open
    ana.click('button[data-status="resolved"]')
    ana.wait_for_selector("#incident-status:has-text('Resolved')", timeout=3000)
    ana.reload()
    ana.click("text=Open the post-mortem")
    ana.wait_for_selector("#pm-root_cause")
    ana.wait_for_load_state("load")  # deferred htmx has run
    ana.evaluate("() => { window.__notReloaded = true; }")

    edit_section(ana, "root_cause", "root_cause", "Webhook signing secret rotated without deploy")
    edit_section(ana, "lessons_learned", "lessons_learned", "Rotate secrets with a checklist")
    ana.fill("#id_text", "Automate secret rotation")
    ana.select_option("#id_owner", label="ana")
    ana.fill("#id_due_date", (timezone.localdate() + timedelta(days=14)).isoformat())
    ana.click("#add-action-item")
    ana.wait_for_selector("#action-items >> text=Automate secret rotation")
    assert ana.evaluate("() => window.__notReloaded") is True  # all of it in place
    pm = PostMortem.objects.get(incident=incident)
    assert pm.root_cause == "Webhook signing secret rotated without deploy"
    assert pm.lessons_learned == "Rotate secrets with a checklist"

    with ana.expect_download() as download:
        ana.click("#export-pdf")
    path = tmp_path / "report.pdf"
    download.value.save_as(path)
    assert path.read_bytes()[:5] == b"%PDF-"

    pdf = pypdfium2.PdfDocument(str(path))
    first = pdf[0]
    image = first.render(scale=1.5).to_pil().convert("L")
    width, height = image.size
    assert (width, height) == (round(595.28 * 1.5), round(841.89 * 1.5))
    # Ink where the title and fields are, a blank margin at the edges.
    top = image.crop((0, 0, width, height // 4))
    dark = sum(top.histogram()[:128])
    assert dark > 2000, "the first page's top quarter is blank"
    assert image.crop((0, 0, 20, height)).getextrema()[0] > 200
    text = first.get_textpage().get_text_range()
    flat = " ".join(text.split())
    assert "Incident Report: Stripe webhooks failing" in flat
    assert "Severity: P1" in flat
    assert "Webhook signing secret rotated without deploy" in flat
    assert "Automate secret rotation" in flat
    assert "@ana" in flat
    pdf.close()
