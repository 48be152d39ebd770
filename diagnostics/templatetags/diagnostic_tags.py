from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def tail(text: str, size: int) -> str:
    """The last `size` characters, cut at a line start."""
    if len(text) <= size:
        return text
    cut = text[-size:]
    newline = cut.find("\n")
    return cut[newline + 1 :] if 0 <= newline < 200 else cut
