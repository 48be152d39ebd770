"""The PDF document every export draws on (fpdf2): fonts that keep every character,
tables that wrap instead of cutting.

Fonts. DejaVu Sans (vendored under fonts/) covers Latin, Greek, Cyrillic, Arabic,
Hebrew and most symbols. Chinese, Japanese and Korean come from Noto Sans CJK
(Debian's `fonts-noto-cjk`, `settings.PDF_CJK_FONT`), registered as fpdf2's fallback
font only in a document that needs it (parsing it costs about a second). A character
no font has is never dropped: an emoji prints as "[emoji]", anything else as its code
point ("[U+0E01]"). `manage.py check` warns when the CJK font is missing.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from functools import cache
from itertools import zip_longest
from pathlib import Path

from django.conf import settings
from fontTools.ttLib import TTCollection, TTFont
from fpdf import FPDF
from fpdf.enums import TableBordersLayout, XPos, YPos
from fpdf.fonts import FontFace

FONT_DIR = Path(__file__).resolve().parent / "fonts"
# fontTools logs every font subset at INFO: one line per table of every PDF.
logging.getLogger("fontTools").setLevel(logging.WARNING)
NOT_WRITTEN = "Not written yet."
EMOJI_PLACEHOLDER = "[emoji]"
CJK_FAMILY = "NotoCJK"
# Noto Sans CJK's collection: 0 JP, 1 KR, 2 SC, 3 TC, 4 HK. Each covers all the
# ideographs; SC draws them the way Simplified Chinese readers expect.
CJK_COLLECTION_INDEX = 2

# Emoji and what joins or modifies them: a run of these prints as one placeholder.
_EMOJI = re.compile(
    "(?:[\U0001f000-\U0001faff\U00002600-\U000027bf\U00002b00-\U00002bff\U0001f1e6-\U0001f1ff]"
    "[\ufe0f\u200d\U0001f3fb-\U0001f3ff\U000e0020-\U000e007f\u20e3]*)+"
)
_JOINERS = frozenset("\ufe0f\ufe0e\u200d")


@cache
def _cmap(path: str, index: int = 0) -> frozenset[int]:
    """The code points a font file has glyphs for (read once per process)."""
    if path.lower().endswith((".ttc", ".otc")):
        font = TTCollection(path, lazy=True).fonts[index]
    else:
        font = TTFont(path, lazy=True)
    return frozenset(font.getBestCmap())


def cjk_font() -> Path | None:
    """The CJK fallback font file, None when it is not installed."""
    path = Path(settings.PDF_CJK_FONT)
    return path if path.is_file() else None


class ReportPDF(FPDF):
    """A4, DejaVu Sans, a footer with the title and the page number."""

    def __init__(self, title: str, orientation: str = "P") -> None:
        super().__init__(orientation=orientation, unit="mm", format="A4")
        self.add_font("DejaVu", "", str(FONT_DIR / "DejaVuSans.ttf"))
        self.add_font("DejaVu", "B", str(FONT_DIR / "DejaVuSans-Bold.ttf"))
        self.add_font("DejaVuMono", "", str(FONT_DIR / "DejaVuSansMono.ttf"))
        self._cjk_loaded = False
        self._covered: dict[str, frozenset[int]] = {}
        self.set_title(title)
        self.set_creator("LotoOps")
        self.set_auto_page_break(True, margin=15)
        self.set_margins(15, 15, 15)
        self.footer_text = title

    # --- every character kept -----------------------------------------------------------

    def normalize_text(self, text: str) -> str:
        """Every string fpdf2 draws or measures passes here: make sure each character
        has a font (the CJK fallback is loaded on first need), or show a placeholder."""
        text = super().normalize_text(text)
        font = self.current_font
        if font is None:
            return text
        have = self._covered.get(font.fontkey)
        if have is None:
            have = self._covered[font.fontkey] = frozenset(getattr(font, "cmap", ()))
        if all(ord(ch) in have for ch in text):
            return text
        return self._printable(text, have)

    def _printable(self, text: str, have: frozenset[int]) -> str:
        cjk = cjk_font()
        cjk_chars = _cmap(str(cjk), CJK_COLLECTION_INDEX) if cjk else frozenset()

        def emoji(match: re.Match[str]) -> str:
            run = match[0]
            if all(ord(ch) in have or ch in _JOINERS for ch in run):
                return "".join(ch for ch in run if ord(ch) in have)
            return EMOJI_PLACEHOLDER

        out = []
        for ch in _EMOJI.sub(emoji, text):
            code = ord(ch)
            if code in have or ch in "\n\r\t":
                out.append(ch)
            elif code in cjk_chars:
                self._load_cjk(cjk)
                out.append(ch)
            elif ch in _JOINERS or unicodedata.category(ch) in ("Mn", "Cf"):
                # A combining mark or format character without a glyph: its base
                # character carries the meaning.
                continue
            else:
                out.append(f"[U+{code:04X}]")
        return "".join(out)

    def _load_cjk(self, path: Path | None) -> None:
        if self._cjk_loaded or path is None:
            return
        self.add_font(CJK_FAMILY, "", str(path), collection_font_number=CJK_COLLECTION_INDEX)
        self.set_fallback_fonts([CJK_FAMILY], exact_match=False)
        self._cjk_loaded = True

    # --- building blocks ----------------------------------------------------------------

    def footer(self) -> None:
        self.set_y(-10)
        self.set_font("DejaVu", "", 7)
        self.set_text_color(120, 120, 120)
        self.cell(0, 5, f"{self.footer_text} · page {self.page_no()}", align="R")
        self.set_text_color(0, 0, 0)

    def heading(self, text: str, size: float = 13) -> None:
        self.ln(2)
        self.set_font("DejaVu", "B", size)
        self.multi_cell(0, size * 0.5, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def para(self, text: str, size: float = 10) -> None:
        self.set_font("DejaVu", "", size)
        self.multi_cell(0, 5, text or NOT_WRITTEN, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def field(self, label: str, value: str) -> None:
        """`Label: value`, the label as wide as it needs, the value wrapping beside it."""
        self.set_font("DejaVu", "B", 10)
        width = max(24.0, self.get_string_width(f"{label}:") + 2.5)
        self.cell(width, 6, f"{label}:")
        self.set_font("DejaVu", "", 10)
        self.multi_cell(0, 6, value, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def grid(
        self, headers: list[str], widths: list[float], rows: list[list[str]], size: float = 8
    ) -> None:
        """A table whose cells wrap (headers included): nothing is cut at the column
        width; the header row repeats on every page the table runs onto."""
        self.set_font("DejaVu", "", size)
        with self.table(
            col_widths=widths,
            width=sum(widths),
            align="LEFT",
            text_align="LEFT",
            line_height=size * 0.5,
            borders_layout=TableBordersLayout.HORIZONTAL_LINES,
            headings_style=FontFace(emphasis="BOLD", fill_color=(236, 239, 244)),
            padding=(0.8, 1.0),
            repeat_headings=1,
        ) as table:
            for values in [headers, *rows]:
                line = table.row()
                for value in values:
                    line.cell(value)
        self.ln(1)

    def mono_table(self, headers: list[str], widths: list[int], rows: list[list[str]]) -> None:
        """A long table as text lines in a monospaced font, columns padded to `widths`
        characters: a text line per row instead of a cell per value is what keeps a
        10,000-row table to seconds (fpdf2 spends ~0.2 ms on every cell). A value
        longer than its column wraps onto the row's next lines, in its column."""
        size, height = 6.5, 3.4

        def lines(values: list[str]) -> list[str]:
            wrapped = [wrap(v, w) for v, w in zip(values, widths, strict=True)]
            return [
                " ".join(pad(part or "", w) for part, w in zip(parts, widths, strict=True))
                for parts in zip_longest(*wrapped)
            ]

        header = lines(headers)
        self.set_font("DejaVuMono", "", size)
        self.set_fill_color(236, 239, 244)

        def draw_header() -> None:
            for text in header:
                self.cell(0, height, text, fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

        draw_header()
        for row in rows:
            texts = lines(row)
            if self.will_page_break(height * len(texts)):
                self.add_page()
                self.set_font("DejaVuMono", "", size)
                draw_header()
            for text in texts:
                self.cell(0, height, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)


def char_width(ch: str) -> int:
    """Columns a character takes in the monospaced table: East Asian wide ones two."""
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(text: str) -> int:
    return len(text) if text.isascii() else sum(map(char_width, text))


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - text_width(text))


def wrap(text: str, width: int) -> list[str]:
    """`text` (whitespace collapsed) in lines of at most `width` columns: at spaces
    where it can, inside a word longer than a line where it must."""
    text = " ".join(text.split())
    if text_width(text) <= width:
        return [text]
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        candidate = f"{current} {word}" if current else word
        if text_width(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for ch in word:
            if text_width(current + ch) > width:
                lines.append(current)
                current = ""
            current += ch
    if current:
        lines.append(current)
    return lines
