"""Channels: where a person's messages go, read from Apprise's own YAML configuration.

Tags in that file map people, roles and groups to channels: a service tagged ``email`` is the
SMTP relay, and each person's mail goes to their own address through it; any other service
(e.g. Teams through Power Automate ``workflows://``) receives messages for the people whose
tags it carries — their id, ``role:<level>`` or ``group:<group-name-slug>``. Secrets live only
in that file or in environment variables (``${SMTP_PASSWORD}``) and are redacted from every
message qip_flow stores or prints. With no channels file, messages are appended to a local file.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import apprise
from apprise.decorators import notify

from qip_flow.errors import InvalidDefinition

FILE_SCHEMA = "qipfile"
_ENV = re.compile(r"\$\{(\w+)\}")


@notify(on=FILE_SCHEMA, name="qip_flow local file")
def _append_to_file(body: str, title: str, notify_type: str, meta: dict[str, Any],
                    *args: Any, **kwargs: Any) -> bool:
    """The default channel: append each message to a local file (``qipfile:///path``)."""
    # Apprise hands the URL back as "qipfile://tmp/x/…": everything after the scheme is the
    # absolute path we wrote, so none of it may be read as a host name.
    path = Path("/" + meta.get("url", "").split("://", 1)[-1].split("?", 1)[0].lstrip("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(f"=== {title}\n{body}\n\n")
    return True


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def person_tags(person_id: str, level: str, groups: list[str]) -> set[str]:
    return {person_id, f"role:{level}", "all", *(f"group:{slug(g)}" for g in groups)}


@dataclass
class Channel:
    name: str  # stable: "email", "file", or "<schema>#<n>" (e.g. "workflow#1")
    kind: str  # email, teams, file, or the Apprise schema
    url: str = field(repr=False)  # with secrets; never stored
    label: str = ""  # with secrets masked
    tags: set[str] = field(default_factory=set)


@dataclass
class SendResult:
    ok: bool
    error: str = ""
    permanent: bool = False  # e.g. HTTP 400: retrying will not help


class Channels:
    """The channels in force and how to reach each person."""

    def __init__(self, channels: list[Channel], secrets: set[str], source: str) -> None:
        self.channels, self.secrets, self.source = channels, secrets, source

    @classmethod
    def load(cls, path: Path | None, *, default_file: Path) -> Channels:
        if path is None:
            url = f"{FILE_SCHEMA}://{default_file.resolve()}"
            return cls([Channel("file", "file", url, f"file {default_file}", {"all"})], set(),
                       f"default: messages are written to {default_file}")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidDefinition(f"{path}: cannot read the channels file ({exc})") from None
        missing = sorted({m for m in _ENV.findall(text) if m not in os.environ})
        if missing:
            raise InvalidDefinition(f"{path}: environment variables not set: {', '.join(missing)}")
        substituted = {os.environ[m] for m in _ENV.findall(text)}
        # values go into URLs: quote them, so a '/', '#' or '@' in a password stays a password
        text = _ENV.sub(lambda m: quote(os.environ[m.group(1)], safe=""), text)
        config = apprise.AppriseConfig()
        if not config.add_config(text, format="yaml"):
            raise InvalidDefinition(f"{path}: not a valid Apprise YAML configuration; see "
                                    "docs/notifications.md")
        services = apprise.Apprise()
        services.add(config)
        channels: list[Channel] = []
        secrets: set[str] = {v for v in substituted if len(v) >= 4}
        for n, service in enumerate(services.find(match_always=False)):
            private, public = service.url(privacy=False), service.url(privacy=True)
            secrets |= _secret_parts(private, public)
            tags = {str(t) for t in service.tags}
            schema = urlsplit(private).scheme
            if "email" in tags:
                channels.append(Channel("email", "email", private, public, tags))
            else:
                kind = "teams" if schema in ("workflow", "workflows") else schema
                channels.append(Channel(f"{kind}#{n}", kind, private, public, tags))
        if not channels:
            raise InvalidDefinition(f"{path}: no services configured")
        return cls(channels, secrets, str(path))

    def for_person(self, tags: set[str], email: str | None) -> list[Channel]:
        found = []
        for channel in self.channels:
            if channel.kind == "email":
                if email:
                    found.append(channel)
            elif channel.tags & tags:
                found.append(channel)
        return found

    def by_name(self, name: str) -> Channel | None:
        return next((c for c in self.channels if c.name == name), None)

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "****")
        return text

    def send(self, channel: Channel, *, email: str | None, subject: str, text: str, html: str,
             card: str) -> SendResult:
        """One try on one channel; what went wrong comes back redacted."""
        url = _with_recipient(channel.url, email) if channel.kind == "email" else channel.url
        services = apprise.Apprise()
        if not services.add(url):
            return SendResult(False, f"{channel.label}: Apprise cannot use this URL", True)
        if channel.kind == "email":
            body, body_format = html, apprise.NotifyFormat.HTML
        elif channel.kind == "file":
            body, body_format = text, apprise.NotifyFormat.TEXT
        else:
            body, body_format = card, apprise.NotifyFormat.MARKDOWN
        with apprise.LogCapture(level=logging.WARNING) as logs:
            result = services.notify(body=body, title=subject, body_format=body_format)
        if result:
            return SendResult(True)
        error = self.redact(" ".join(logs.getvalue().split()))[-500:] or "delivery failed"
        code = re.search(r"error=(\d{3})", error)
        permanent = bool(code and code.group(1).startswith("4") and code.group(1) not in
                         ("408", "429"))
        return SendResult(False, error, permanent)


def _secret_parts(private: str, public: str) -> set[str]:
    """What the masked URL hides (passwords, tokens, signatures), both as Apprise writes them
    (URL-encoded) and as a person wrote them."""
    split_private = re.split(r"[/:@?&=]", private)
    split_public = set(re.split(r"[/:@?&=]", public))
    hidden = {p for p in split_private if len(p) >= 4 and p not in split_public}
    return hidden | {unquote(p) for p in hidden}


def _with_recipient(url: str, email: str | None) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(email or "", safe="@"),
                       parts.query, parts.fragment))
