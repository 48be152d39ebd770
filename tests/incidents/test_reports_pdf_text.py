"""The exports keep every character and lay out without clipping: Chinese, accents
and emoji in the PDFs (read back with pdfplumber), long action items wrapped in
full, every word inside the page and inside its own space, the chart legend clear
of the plot; the CSV opens in Excel with its accents (UTF-8 BOM)."""

from __future__ import annotations

import io
from datetime import date
from itertools import combinations, pairwise

import pdfplumber
import pypdfium2 as pdfium
import pytest
from django.urls import reverse

from incidents.models import ActionItem
from incidents.postincident import postmortem
from incidents.reporting import exports, pdfdoc
from tests.incidents.helpers import lived

pytestmark = pytest.mark.django_db

CHINESE = "支付回调失败"
ACCENTED = "Señor Pérez: conexión rechazada, ¿reintentar? Ça marche, Øresund, Łódź"
LONG_ITEM = (
    "Raise the payment database's connection pool from 5 to 40 connections, add an alert "
    "on pool saturation above 80 percent for five minutes, and document the new limit "
    "in the runbook's database section so the next on-call engineer finds it (end-of-item)"
)


def pdf_words(content: bytes) -> list[tuple[float, float, list[dict]]]:
    """Each page's size and words with their boxes (top-down coordinates, as
    pdfplumber's), read by PDFium: pdfminer cannot read the CJK font's embedded CMap."""
    pages = []
    doc = pdfium.PdfDocument(content)
    for page in doc:
        width, height = page.get_size()
        text = page.get_textpage()
        words: list[dict] = []
        current: dict | None = None
        for i in range(text.count_chars()):
            ch = text.get_text_range(i, 1)
            if not ch.strip():
                current = None
                continue
            left, bottom, right, top = text.get_charbox(i)
            box = {"x0": left, "x1": right, "top": height - top, "bottom": height - bottom}
            if (
                current
                and current["x1"] - 0.5 <= left <= current["x1"] + 1.5
                and abs(box["top"] - current["top"]) < 2
            ):
                current["text"] += ch
                current["x1"] = max(current["x1"], right)
                current["top"] = min(current["top"], box["top"])
                current["bottom"] = max(current["bottom"], box["bottom"])
            else:
                current = {"text": ch, **box}
                words.append(current)
        pages.append((width, height, words))
    return pages


def flat_text(content: bytes) -> str:
    doc = pdfium.PdfDocument(content)
    return " ".join(" ".join(page.get_textpage().get_text_range().split()) for page in doc)


def overlap(a: dict, b: dict, slack: float = 0.3) -> bool:
    return (
        min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]) > slack
        and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > slack
    )


def assert_laid_out(content: bytes) -> None:
    """Every word inside its page's printable area (no clipping at an edge) and no
    word drawn over another (no cell spilling into its neighbour)."""
    for number, (width, height, words) in enumerate(pdf_words(content), 1):
        for word in words:
            assert word["x0"] >= 0 and word["x1"] <= width, (number, word["text"])
            assert word["top"] >= 0 and word["bottom"] <= height, (number, word["text"])
        clashes = [(a["text"], b["text"]) for a, b in combinations(words, 2) if overlap(a, b)]
        assert not clashes, (number, clashes[:5])


@pytest.fixture
def worldwide(responder, other_responder):
    incident = lived(
        responder, commander=responder, title=f"Pagos: {CHINESE} 🔥 en el Banco Popular"
    )
    pm = incident.postmortem
    postmortem.save_section(
        pm, "summary", {"summary": f"{ACCENTED}. 日本語のログ, 한국어 로그. Done ✅👍🏽"},
        version=pm.version, original={}, actor=responder,
    )  # fmt: skip
    ActionItem.objects.create(
        incident=incident, text=LONG_ITEM, owner=other_responder, due_date=date(2026, 3, 9)
    )
    ActionItem.objects.create(incident=incident, text=f"修复 {CHINESE} 的重试", owner=None)
    incident.refresh_from_db()
    return incident


@pytest.mark.cjk_font
def test_the_incident_pdf_keeps_chinese_accents_emoji_and_the_whole_long_item(
    client, responder, worldwide
):
    client.force_login(responder)
    response = client.get(reverse("incidents:export_pdf", args=[worldwide.pk]))
    assert response.status_code == 200
    text = flat_text(response.content)
    assert CHINESE in text.replace(" ", "")
    assert "日本語のログ" in text.replace(" ", "") and "한국어" in text
    assert "Señor Pérez: conexión rechazada, ¿reintentar? Ça marche, Øresund, Łódź" in text
    # Emoji: no font here has them; each prints as a placeholder, never as nothing.
    assert "Pagos:" in text and text.count(pdfdoc.EMOJI_PLACEHOLDER) >= 2
    assert "Done [emoji]" in text
    # The long action item is all there, wrapped over several lines of its cell.
    assert LONG_ITEM in text
    assert "…" not in text
    assert_laid_out(response.content)


def test_the_long_action_item_wraps_inside_its_column(responder, worldwide):
    content = exports.incident_pdf(exports.incident_report(worldwide))
    for _width, _height, words in pdf_words(content):
        heads = {w["text"]: w for w in words if w["text"] in ("Item", "Owner")}
        if len(heads) < 2:
            continue
        item_words = [
            w
            for w in words
            if w["top"] > heads["Item"]["bottom"] and w["x0"] < heads["Owner"]["x0"]
        ]
        lines = {round(w["top"]) for w in item_words if w["text"] in LONG_ITEM}
        assert len(lines) >= 3, lines  # wrapped, not one line cut at the column
        assert all(w["x1"] <= heads["Owner"]["x0"] for w in item_words)
        break
    else:
        pytest.fail("no action-item table found")


@pytest.mark.cjk_font
def test_the_period_pdf_keeps_every_character_and_its_legend_clear_of_the_plot(
    client, responder, worldwide
):
    client.force_login(responder)
    response = client.get(
        reverse("incidents:reports_pdf"), {"start": "2026-03-01", "end": "2026-03-07"}
    )
    assert response.status_code == 200
    text = flat_text(response.content)
    assert CHINESE in text.replace(" ", "")
    assert all(word in text for word in LONG_ITEM.split())  # wrapped in its column, not cut
    # Headers fit their columns whole (a header split mid-word reads as two words).
    for header in ("Acknowledged", "Compliance", "Breached", "Pending"):
        assert f" {header} " in text, header
    # People's words, not stored keys: the category's label (wrapped in its column) and
    # the status's.
    assert "Payment" in text.split() and "processing" in text.split()
    assert "resolved" not in text.split()
    assert_laid_out(response.content)
    pdf = pdfplumber.open(io.BytesIO(response.content))
    pages = pdf_words(response.content)
    number = next(i for i, (_, _, ws) in enumerate(pages) if any(w["text"] == "week" for w in ws))
    page, words = pdf.pages[number], pages[number][2]
    title = next(
        w for w, after in pairwise(words) if (w["text"], after["text"]) == ("Incidents", "per")
    )
    legend = [
        w
        for w in words
        if w["text"] in ("P0", "P1", "P2", "P3") and 0 <= w["top"] - title["top"] < 24
    ]
    assert len(legend) == 4
    # The plot: the bars (boxes taller than a 7-point legend swatch) and the y axis.
    bars = [r for r in page.rects if r["height"] > 8 and r["top"] > title["bottom"]]
    assert bars
    plot_top = min(r["top"] for r in bars)
    axis = [
        ln for ln in page.lines if abs(ln["x0"] - ln["x1"]) < 0.01 and ln["x0"] < title["x0"] + 1
    ]
    assert axis
    for word in legend:
        assert word["bottom"] <= plot_top and word["bottom"] <= min(a["top"] for a in axis) + 0.5
        assert not overlap(word, title)


def test_a_character_no_font_has_is_shown_not_dropped(responder):
    pdf = pdfdoc.ReportPDF("test")
    pdf.add_page()
    pdf.para("Thai ก, fire 🔥, a family 👨‍👩‍👧, a flag 🇩🇴, and a face DejaVu draws 😀")
    text = flat_text(bytes(pdf.output()))
    assert "Thai [U+0E01], fire [emoji], a family [emoji], a flag [emoji]," in text
    assert "DejaVu draws 😀" in text


def test_the_csv_starts_with_a_bom_so_excel_reads_utf8(client, responder, worldwide):
    client.force_login(responder)
    response = client.get(
        reverse("incidents:reports_csv"), {"start": "2026-03-01", "end": "2026-03-07"}
    )
    assert response.content.startswith(b"\xef\xbb\xbf")
    assert response.content.count(b"\xef\xbb\xbf") == 1
    assert "Pagos: 支付回调失败 🔥 en el Banco Popular" in response.content.decode("utf-8-sig")


@pytest.mark.cjk_font
def test_a_missing_cjk_font_is_a_start_up_warning_and_a_visible_code_point(settings, tmp_path):
    from incidents.apps import pdf_cjk_font

    assert pdf_cjk_font() == []  # installed here (.ci/run and the Dockerfile install it)
    settings.PDF_CJK_FONT = str(tmp_path / "missing.ttc")
    (warning,) = pdf_cjk_font()
    assert warning.id == "incidents.W001" and "fonts-noto-cjk" in warning.hint
    pdf = pdfdoc.ReportPDF("test")
    pdf.add_page()
    pdf.para(f"Pago {CHINESE}")
    assert "Pago [U+652F][U+4ED8]" in flat_text(bytes(pdf.output()))
