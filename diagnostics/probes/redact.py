"""The one way a secret is hidden, everywhere: probe output, results, the
timeline, pages, downloads, the live stream and logs all show MASK.

A secret is also masked when a server echoes it encoded: in any letter case,
URL-encoded, in hex, and in base64 (standard and URL-safe, with or without
padding, alone or inside a longer base64 text such as `Basic <user:password>`)."""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "•••"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


def usable(secrets: Iterable[str]) -> list[str]:
    """The secrets worth masking, longest first (so a secret containing
    another is masked whole)."""
    return sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    found = tuple(usable(secrets))
    if not found or not text:
        return text
    return _pattern(found).sub(MASK, text)


def encodings(secret: str) -> set[str]:
    """The forms a secret takes when echoed encoded (matched in any letter case)."""
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), raw.hex()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        forms |= {whole, whole.rstrip("=")}
        # Inside a longer base64 text the secret starts at byte offset 0, 1 or 2
        # of a 3-byte group: keep the characters that depend on its bytes only.
        for shift in range(3):
            text = encode(b"\0" * shift + raw).decode().rstrip("=")
            start, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
            forms.add(text[start:end])
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


@functools.lru_cache(maxsize=64)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str]:
    forms = set().union(*(encodings(secret) for secret in secrets))
    alternatives = sorted(forms, key=len, reverse=True)  # the longest form wins
    return re.compile("|".join(re.escape(form) for form in alternatives), re.IGNORECASE)


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
