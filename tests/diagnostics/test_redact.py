"""The one mask also hides a secret a server echoes encoded."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from diagnostics.probes.redact import MASK, redact, redact_encoded_json, redact_json

SECRET = "s3cr3t/Pass+word=!"  # characters that base64 and URL-encoding change
RAW = SECRET.encode()


@pytest.mark.parametrize(
    "echoed",
    [
        pytest.param(SECRET, id="plain"),
        pytest.param(SECRET.upper(), id="upper case"),
        pytest.param(SECRET.lower(), id="lower case"),
        pytest.param(base64.b64encode(RAW).decode(), id="base64"),
        pytest.param(base64.b64encode(RAW).decode().rstrip("="), id="base64 unpadded"),
        pytest.param(base64.urlsafe_b64encode(RAW).decode(), id="base64 url-safe"),
        pytest.param(
            base64.urlsafe_b64encode(RAW).decode().rstrip("="), id="base64 url-safe unpadded"
        ),
        pytest.param(quote(SECRET, safe=""), id="url-encoded"),
        pytest.param(quote(SECRET, safe="").lower(), id="url-encoded lower-case escapes"),
        pytest.param(quote(SECRET), id="url-encoded keeping slashes"),
        pytest.param(quote_plus(SECRET), id="form-encoded"),
        pytest.param(RAW.hex(), id="hex"),
        pytest.param(RAW.hex().upper(), id="hex upper case"),
    ],
)
def test_an_echoed_secret_is_masked_in_its_encodings(echoed):
    text = f"server said: token={echoed}; bye"
    masked = redact(text, [SECRET])
    assert masked == f"server said: token={MASK}; bye"


@pytest.mark.parametrize("user", ["u", "us", "usr", "lotolink"])
def test_a_secret_inside_longer_base64_is_masked_whatever_its_offset(user):
    """`Authorization: Basic base64(user:password)` echoed by a careless endpoint."""
    header = "Basic " + base64.b64encode(f"{user}:{SECRET}".encode()).decode()
    masked = redact(header, [SECRET])
    assert MASK in masked
    # At most the one or two characters shared with the user name are left.
    leftover = masked.removeprefix("Basic ").replace(MASK, "")
    assert len(leftover) <= len(base64.b64encode(f"{user}:".encode()).decode()) + 3


def test_ordinary_text_and_short_values_are_left_alone():
    assert redact("line 1: all good", [SECRET, "ab"]) == "line 1: all good"
    assert redact("", [SECRET]) == ""


def test_structures_and_json_text_are_masked_in_every_encoding():
    b64 = base64.b64encode(RAW).decode()
    value = {"auth": f"Bearer {b64}", SECRET.upper(): [quote(SECRET, safe="")]}
    assert redact_json(value, [SECRET]) == {"auth": f"Bearer {MASK}", MASK: [MASK]}
    document = json.dumps({"echo": SECRET.lower(), "b64": b64})
    assert SECRET.lower() not in redact_encoded_json(document, [SECRET])
    assert b64 not in redact_encoded_json(document, [SECRET])
