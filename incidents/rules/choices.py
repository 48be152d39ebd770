"""Lists of known values (categories, flags, evidence keys) as stored in JSON
fields: the one check behind the models' validators and the admin's checkboxes.
Pure: the caller passes what is known and gets a sentence for a person, or None."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def list_problem(value: Any, known: Mapping[str, str], what: str) -> str | None:
    """Why `value` is not a list of known `what`s (keys of `known`, label as value),
    or None when it is. A string is refused (not split into letters), as are
    duplicates and anything not a string."""
    choose = ", ".join(f"{key} ({label})" if label != key else key for key, label in known.items())
    whats = what[:-1] + "ies" if what.endswith("y") else what + "s"
    if isinstance(value, str):
        return (
            f"Expected a list of {whats}, got the text {value!r}: tick the {whats} "
            f"instead (known: {choose})."
        )
    if not isinstance(value, list | tuple):
        return f"Expected a list of {whats}, got {type(value).__name__}."
    unknown = [item for item in value if not isinstance(item, str) or item not in known]
    if unknown:
        shown = ", ".join(repr(item) for item in unknown)
        suggestion = ""
        for item in unknown:
            near = _near(item, known) if isinstance(item, str) else None
            if near:
                suggestion = f" Did you mean {near!r}?"
                break
        return f"Unknown {what} {shown}.{suggestion} Known {whats}: {choose}."
    if len(set(value)) != len(value):
        return f"A {what} is listed twice."
    return None


def _near(item: str, known: Mapping[str, str]) -> str | None:
    """A known key that differs from `item` only by case, spaces, dashes or underscores."""

    def squash(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    for key, label in known.items():
        if squash(item) in (squash(key), squash(label)):
            return key
    return None
