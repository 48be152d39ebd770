"""The one way a secret is hidden, everywhere: probe output, results, the
timeline, pages, downloads, the live stream and logs all show MASK."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

MASK = "•••"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


def usable(secrets: Iterable[str]) -> list[str]:
    """The secrets worth masking, longest first (so a secret containing
    another is masked whole)."""
    return sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in usable(secrets):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_json(value: Any, secrets: Iterable[str]) -> Any:
    """The same structure with every secret masked in keys and values."""
    found = usable(secrets)
    if not found:
        return value
    if isinstance(value, str):
        return redact(value, found)
    if isinstance(value, list | tuple):
        return [redact_json(v, found) for v in value]
    if isinstance(value, dict):
        return {redact(str(k), found): redact_json(v, found) for k, v in value.items()}
    return value


def redact_encoded_json(text: str, secrets: Iterable[str]) -> str:
    """Mask secrets inside a JSON document's text (escaped as JSON escapes them)."""
    return redact(text, [json.dumps(s)[1:-1] for s in usable(secrets)])
