"""Markdown people wrote, made harmless: parsed with a CommonMark parser (markdown-it-py),
never with regular expressions.

- `safe_markdown`: Markdown text for the `.md` export. HTML is shown as text, and every
  link or image whose target is not http(s) (javascript:, data:, vbscript:, file:, …,
  however written: nested brackets, entities, mixed case, whitespace, reference
  definitions) keeps its text and loses its target. The parser finds the links (where
  they start and end in the text) and the text is rewritten there; the result is parsed
  again until no such link is left, and if the rewriting could not place one, every
  bracket is escaped (nothing can be a link then).
- `markdown_html`: the same text as HTML for a page, rendered by markdown-it-py (raw HTML
  off) and sanitised by nh3 (Ammonia): only http(s) and mailto links, no scripts.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_block.reference import reference as block_reference
from markdown_it.rules_block.state_block import StateBlock
from markdown_it.rules_inline.image import image as inline_image
from markdown_it.rules_inline.link import link as inline_link
from markdown_it.rules_inline.state_inline import StateInline

SAFE_SCHEMES = ("http://", "https://")
MAX_PASSES = 8


def is_safe_target(href: str) -> bool:
    """An http(s) address (as the parser resolved it: entities decoded, trimmed)."""
    return href.strip().lower().startswith(SAFE_SCHEMES)


@dataclass
class _Found:
    """What one parse found: inline links and images (by the inline text they were
    found in) and reference definitions (by their position in the source)."""

    inline: list[tuple[str, int, int, int, int, str]] = field(default_factory=list)
    references: list[tuple[int, str]] = field(default_factory=list)


def _recording(rule: Any, label_offset: int) -> Any:
    """The parser's own link (or image) rule, noting where each link it makes is."""

    def rule_and_record(state: StateInline, silent: bool) -> bool:
        start, pushed = state.pos, len(state.tokens)
        if not rule(state, silent):
            return False
        if not silent:
            end = state.pos
            opener = next(
                (t for t in state.tokens[pushed:] if t.type in ("link_open", "image")), None
            )
            href = str(opener.attrGet("href") or opener.attrGet("src") or "") if opener else ""
            label_start = start + label_offset
            label_end = state.md.helpers.parseLinkLabel(state, label_start - 1, label_offset == 1)
            state.pos = end
            state.env["found"].inline.append((state.src, start, end, label_start, label_end, href))
        return True

    return rule_and_record


def _reference(state: StateBlock, start_line: int, end_line: int, silent: bool) -> bool:
    before = dict(state.env.get("references", {}))
    if not block_reference(state, start_line, end_line, silent):
        return False
    if not silent:
        for label, ref in state.env.get("references", {}).items():
            if label not in before:
                position = state.bMarks[start_line] + state.tShift[start_line]
                state.env["found"].references.append((position, ref.get("href", "")))
    return True


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False})
    md.validateLink = lambda url: True  # find every link, whatever its scheme
    md.inline.ruler.at("link", _recording(inline_link, 1))
    md.inline.ruler.at("image", _recording(inline_image, 2))
    md.block.ruler.at(
        "reference", _reference, {"alt": ["paragraph", "reference", "blockquote", "list"]}
    )
    return md


_PARSER = _parser()


def _find(text: str) -> tuple[_Found, list[Any]]:
    env: dict[str, Any] = {"found": _Found()}
    tokens = _PARSER.parse(text, env)
    return env["found"], tokens


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for index, char in enumerate(text):
        if char == "\n":
            starts.append(index + 1)
    return starts


def _source_offsets(text: str, content: str, first_line: int) -> list[int] | None:
    """For each line of an inline block's content, where it starts in `text` (the
    content is the source's lines without their container markers and indentation)."""
    starts = _line_starts(text)
    lines = text.split("\n")
    offsets = []
    content_lines = content.split("\n")
    for i, piece in enumerate(content_lines):
        number = first_line + i
        if number >= len(lines):
            return None
        line = lines[number]
        if i < len(content_lines) - 1 and line.endswith(piece):
            at = len(line) - len(piece)
        elif line.rstrip().endswith(piece):
            at = len(line.rstrip()) - len(piece)
        else:
            at = line.find(piece)
            if at < 0:
                return None
        offsets.append(starts[number] + at)
    return offsets


def _to_source(offsets: list[int], content: str, position: int) -> int:
    line = content.count("\n", 0, position)
    column = position - (content.rfind("\n", 0, position) + 1)
    return offsets[line] + column


def _inline_blocks(tokens: list[Any]) -> list[tuple[str, int]]:
    return [(t.content, t.map[0]) for t in tokens if t.type == "inline" and t.map]


def _rewrite_once(text: str) -> tuple[str, bool]:
    """One pass: (text with the outermost unsafe links unwrapped, whether any was found)."""
    found, tokens = _find(text)
    edits: list[tuple[int, int, str]] = []
    for position, href in found.references:
        if not is_safe_target(href):
            edits.append((position, position, "\\"))
    blocks = _inline_blocks(tokens)
    for src, start, end, label_start, label_end, href in found.inline:
        if is_safe_target(href):
            continue
        block = next(((c, line) for c, line in blocks if c is src), None)
        offsets = _source_offsets(text, src, block[1]) if block else None
        if offsets is None or label_end < label_start:
            raise LookupError("a link could not be placed in the text")
        s, e = _to_source(offsets, src, start), _to_source(offsets, src, end)
        ls, le = _to_source(offsets, src, label_start), _to_source(offsets, src, label_end)
        edits.append((s, e, text[ls:le]))
    if not edits:
        return text, False
    # Outermost first; a link inside a rewritten one is seen by the next pass.
    edits.sort(key=lambda edit: (edit[0], -edit[1]))
    kept: list[tuple[int, int, str]] = []
    for edit in edits:
        if not kept or edit[0] >= kept[-1][1] or edit[0] == edit[1] == kept[-1][0]:
            kept.append(edit)
    for start, end, replacement in reversed(kept):
        text = text[:start] + replacement + text[end:]
    return text, True


def _unsafe_left(text: str) -> bool:
    found, _ = _find(text)
    return any(not is_safe_target(href) for *_, href in found.inline) or any(
        not is_safe_target(href) for _, href in found.references
    )


def _escape_brackets(text: str) -> str:
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def safe_markdown(text: str) -> str:
    """`text` for a Markdown file: HTML as text, only http(s) links kept."""
    text = html.escape(text.replace("\r\n", "\n").replace("\r", "\n"), quote=False)
    try:
        for _ in range(MAX_PASSES):
            text, changed = _rewrite_once(text)
            if not changed:
                return text
    except (LookupError, IndexError):
        pass
    if _unsafe_left(text):
        text = _escape_brackets(text)
    return text


# Line breaks kept (as the plain text was shown); raw HTML is text.
_HTML = MarkdownIt("commonmark", {"html": False, "breaks": True})
# No images: a post-mortem must not load (or track through) another site's picture.
HTML_TAGS = set(nh3.ALLOWED_TAGS) - {"img"}


def markdown_html(text: str) -> str:
    """`text` rendered as HTML for a page: no raw HTML, only http(s) and mailto links."""
    return nh3.clean(
        _HTML.render(text),
        tags=HTML_TAGS,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
