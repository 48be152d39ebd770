"""Notification channels: one small class per channel behind one interface.

A channel turns a `Message` into one external call (every call with a timeout)
and either returns a short description of what it did or raises
`DeliveryError`, saying whether trying again may help. Channels know nothing of
our database; `incidents.paging` stores the outcome and schedules retries.

Secrets come from settings read from environment variables (SLACK_BOT_TOKEN,
NOTIFY_WEBHOOK_SECRET, EMAIL_HOST_PASSWORD); they never reach the database or an
error message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import requests
from django.conf import settings
from django.core.mail import EmailMessage, get_connection


class DeliveryError(Exception):
    """The channel did not take the message. `permanent`: retrying will not help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Person:
    name: str
    email: str = ""
    slack: str = ""
    phone: str = ""


@dataclass(frozen=True)
class Message:
    kind: str  # page (to a person) | update (a status update) | channel (open the channel)
    subject: str
    text: str
    incident_id: int
    channel_name: str  # "#incident-YYYY-MM-DD-brief-description"
    url: str = ""
    ack_url: str = ""
    recipient: str = ""
    role: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    # A restricted incident: its Slack channel is private (the texts were written
    # without its title or summary by `decide`/`outbox`).
    restricted: bool = False


class Channel:
    """The interface: `address_for` a person ('' = no address), `send` a message."""

    name: ClassVar[str]

    @classmethod
    def enabled(cls) -> bool:
        raise NotImplementedError

    def address_for(self, person: Person) -> str:
        raise NotImplementedError

    def send(self, message: Message, address: str) -> str:
        raise NotImplementedError

    @classmethod
    def not_delivered(cls) -> str:
        """Why what this channel takes never leaves the machine ("" when it does):
        a message it took is then recorded as not delivered, never as sent."""
        return ""


# Django's email backends that keep the message on this machine, and what they do with it.
LOCAL_EMAIL_BACKENDS = {
    "django.core.mail.backends.console.EmailBackend": "printed to the console",
    "django.core.mail.backends.locmem.EmailBackend": "kept in memory (the test backend)",
    "django.core.mail.backends.dummy.EmailBackend": "discarded (the dummy backend)",
    "django.core.mail.backends.filebased.EmailBackend": "written to a file (EMAIL_FILE_PATH)",
}


class EmailChannel(Channel):
    """Django's email backend (SMTP in production, with EMAIL_TIMEOUT)."""

    name = "email"

    @classmethod
    def enabled(cls) -> bool:
        return True

    @classmethod
    def not_delivered(cls) -> str:
        what = LOCAL_EMAIL_BACKENDS.get(settings.EMAIL_BACKEND)
        return f"{what}: not delivered" if what else ""

    def address_for(self, person: Person) -> str:
        return person.email

    def send(self, message: Message, address: str) -> str:
        body = message.text + (f"\n\nAcknowledge: {message.ack_url}" if message.ack_url else "")
        connection = get_connection(timeout=settings.EMAIL_TIMEOUT)
        email = EmailMessage(message.subject, body, to=[address], connection=connection)
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            raise DeliveryError(f"SMTP refused {address}", permanent=True) from exc
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode(errors="replace") if exc.smtp_error else ""
            raise DeliveryError(
                f"SMTP {exc.smtp_code} {text}".strip(), permanent=500 <= exc.smtp_code < 600
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP unreachable: {type(exc).__name__}: {exc}") from exc
        return f"emailed {address}"


# Slack errors worth another try; every other `ok: false` is final.
SLACK_TRANSIENT = {"ratelimited", "internal_error", "fatal_error", "service_unavailable"}


class SlackChannel(Channel):
    """Slack's Web API with a bot token; an incoming webhook as the fallback
    (which can post, but neither create channels nor send direct messages)."""

    name = "slack"

    @classmethod
    def enabled(cls) -> bool:
        return bool(settings.SLACK_BOT_TOKEN or settings.SLACK_WEBHOOK_URL)

    def address_for(self, person: Person) -> str:
        return person.slack if settings.SLACK_BOT_TOKEN else ""

    def send(self, message: Message, address: str) -> str:
        if not settings.SLACK_BOT_TOKEN:
            return self._webhook(message)
        if message.kind == "channel":
            return self._open_channel(message)
        target = address or message.channel_name.lstrip("#")
        self.call("chat.postMessage", {"channel": target, "text": _slack_text(message)})
        return f"posted to {address or message.channel_name}"

    def _open_channel(self, message: Message) -> str:
        name = message.channel_name.lstrip("#")
        done = []
        try:
            create: dict[str, Any] = {"name": name}
            if message.restricted:
                create["is_private"] = True
            channel = self.call("conversations.create", create)["channel"]["id"]
            done.append(f"created #{name}")
        except DeliveryError as exc:
            if "name_taken" not in str(exc):
                raise
            channel = name  # exists already (a retry after a lost answer): post to it
        invite = [u for u in message.data.get("invite", []) if u]
        if invite and channel != name:
            try:
                self.call("conversations.invite", {"channel": channel, "users": ",".join(invite)})
                done.append(f"invited {len(invite)}")
            except DeliveryError as exc:
                done.append(f"invite failed ({exc})")
        self.call("chat.postMessage", {"channel": channel, "text": _slack_text(message)})
        done.append("posted the initial status update")
        return ", ".join(done)

    def call(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        url = f"{settings.SLACK_API_URL.rstrip('/')}/{method}"
        try:
            response = requests.post(
                url,
                json=payload,
                headers={"Authorization": f"Bearer {settings.SLACK_BOT_TOKEN}"},
                timeout=settings.NOTIFY_TIMEOUT,
            )
        except requests.RequestException as exc:
            raise DeliveryError(f"Slack {method} unreachable: {type(exc).__name__}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise DeliveryError(f"Slack {method} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise DeliveryError(f"Slack {method} answered HTTP {response.status_code}") from exc
        if not body.get("ok"):
            error = str(body.get("error", "unknown_error"))
            raise DeliveryError(f"Slack {method}: {error}", permanent=error not in SLACK_TRANSIENT)
        return body

    def _webhook(self, message: Message) -> str:
        if message.kind == "page":
            raise DeliveryError("Slack direct messages need SLACK_BOT_TOKEN", permanent=True)
        text = f"{message.channel_name}: {_slack_text(message)}"
        try:
            response = requests.post(
                settings.SLACK_WEBHOOK_URL, json={"text": text}, timeout=settings.NOTIFY_TIMEOUT
            )
        except requests.RequestException as exc:
            raise DeliveryError(f"Slack webhook unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 400:
            raise DeliveryError(
                f"Slack webhook answered HTTP {response.status_code}",
                permanent=400 <= response.status_code < 500 and response.status_code != 429,
            )
        return "posted through the Slack incoming webhook"


def _slack_text(message: Message) -> str:
    text = message.text
    if message.ack_url:
        text += f"\nAcknowledge: {message.ack_url}"
    return text


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over "<timestamp>.<body>", as sent in X-LotoOps-Signature."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: int = 300
) -> bool:
    """What a receiver checks: the signature, and a timestamp close to now (no replays)."""
    try:
        fresh = abs(now - int(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookChannel(Channel):
    """A generic JSON webhook, signed with HMAC-SHA256 and a timestamp."""

    name = "webhook"

    @classmethod
    def enabled(cls) -> bool:
        return bool(settings.NOTIFY_WEBHOOK_URL)

    def address_for(self, person: Person) -> str:
        return "webhook" if self.enabled() else ""

    def send(self, message: Message, address: str) -> str:
        secret = settings.NOTIFY_WEBHOOK_SECRET
        if not secret:
            raise DeliveryError("NOTIFY_WEBHOOK_SECRET is not set: refusing to send unsigned")
        body = json.dumps(
            {
                "type": message.kind,
                "incident": message.incident_id,
                "channel": message.channel_name,
                "subject": message.subject,
                "text": message.text,
                "url": message.url,
                "ack_url": message.ack_url,
                "recipient": {"name": message.recipient, "role": message.role},
                "data": message.data,
            },
            sort_keys=True,
        ).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-LotoOps-Timestamp": timestamp,
            "X-LotoOps-Signature": sign(secret, timestamp, body),
        }
        try:
            response = requests.post(
                settings.NOTIFY_WEBHOOK_URL,
                data=body,
                headers=headers,
                timeout=settings.NOTIFY_TIMEOUT,
            )
        except requests.RequestException as exc:
            raise DeliveryError(f"webhook unreachable: {type(exc).__name__}") from exc
        status = response.status_code
        if status >= 300:
            permanent = 400 <= status < 500 and status not in (408, 429)
            raise DeliveryError(f"webhook answered HTTP {status}", permanent=permanent)
        return f"webhook answered HTTP {status}"


CHANNELS: dict[str, type[Channel]] = {
    channel.name: channel for channel in (EmailChannel, SlackChannel, WebhookChannel)
}


def enabled_channels() -> list[Channel]:
    return [channel() for channel in CHANNELS.values() if channel.enabled()]


def delivering_channels() -> list[str]:
    """The names of the enabled channels whose messages leave this machine."""
    return [c.name for c in CHANNELS.values() if c.enabled() and not c.not_delivered()]
