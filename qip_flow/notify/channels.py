"""Channels: where a person's messages go, read from Apprise's own YAML configuration.

Tags in that file map people, roles and groups to channels: a service tagged ``email`` is the
SMTP relay, and each person's mail goes to their own address through it; any other service
(e.g. Teams through Power Automate ``workflows://``) receives messages for the people whose
tags it carries — their id, ``role:<level>``, ``group:<group-name-slug>`` or ``all`` — and the
tag ``operators`` marks where failing plans are reported. Each channel is known by its name
(``name:``, else its kind and tags), never by its place in the file; a service Apprise cannot
use, with no tag, or with a name already taken is refused with its line. Secrets live only in
that file or in environment variables (``${SMTP_PASSWORD}``) and are redacted from every
message qip_flow stores or prints. With no channels file, messages are appended to a local file.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

import yaml

from qip_flow.errors import InvalidDefinition
from qip_flow.notify import mail
from qip_flow.notify.webhooks import Subscriber, http_client, post, subscribers_in

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("qip_flow.notify")

FILE_SCHEMA = "qipfile"
_ENV = re.compile(r"\$\{(\w+)\}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,79}")


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


@cache
def _apprise() -> ModuleType:
    """Apprise, imported when a channel needs it (reading the channels file, Teams, any other
    service; never to send email through a relay already read), with our local-file service
    registered once."""
    import apprise
    from apprise.decorators import notify

    notify(on=FILE_SCHEMA, name="qip_flow local file")(_append_to_file)
    return apprise


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def person_tags(person_id: str, level: str, groups: list[str]) -> set[str]:
    return {person_id, f"role:{level}", "all", *(f"group:{slug(g)}" for g in groups)}


@dataclass
class Channel:
    """One service of the channels file, known by its name — never by its place in the file,
    so reordering the file changes nothing about who gets what."""

    name: str  # "email" (the relay), "file" (the default), a `name:` given, or kind:tags
    kind: str  # email, teams, file, or the Apprise schema
    url: str = field(repr=False)  # with secrets; never stored
    label: str = ""  # with secrets masked
    tags: set[str] = field(default_factory=set)
    line: int | None = None  # where it is written in the channels file
    relay: mail.Relay | None = field(default=None, repr=False)  # email: read with the file

    @property
    def personal(self) -> bool:
        """The relay addresses each person; any other channel is read by everyone it is
        tagged for, so several recipients of one decision share one message there."""
        return self.kind in ("email", "file")


@dataclass
class SendResult:
    ok: bool
    error: str = ""
    permanent: bool = False  # e.g. HTTP 400: retrying will not help


OPERATORS = "operators"
_TOP_LEVEL = {"version", "urls", "tag", "tags", "webhooks"}


@dataclass
class _Entry:
    """One service as written in the file: its URL, its options (for Apprise), its line."""

    url: str
    options: dict[str, Any]
    line: int
    name: str | None = None
    tags: set[str] = field(default_factory=set)


class Channels:
    """The channels in force and how to reach each person."""

    def __init__(self, channels: list[Channel], secrets: set[str], source: str,
                 webhooks: list[Subscriber] | None = None) -> None:
        self.channels, self.secrets, self.source = channels, secrets, source
        self.webhooks = list(webhooks or [])

    @classmethod
    def load(cls, path: Path | None, *, default_file: Path) -> Channels:
        """Read the channels file whole: every service must be one Apprise can use, carry at
        least one tag and a name no other service has; otherwise the file is refused with the
        line to fix — a channel is never dropped silently."""
        if path is None:
            url = f"{FILE_SCHEMA}://{default_file.resolve()}"
            return cls([Channel("file", "file", url, f"file {default_file}",
                                {"all", OPERATORS})], set(),
                       f"default: messages are written to {default_file}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidDefinition(f"{path}: cannot read the channels file ({exc})") from None
        missing = sorted({m for m in _ENV.findall(text) if m not in os.environ})
        if missing:
            raise InvalidDefinition(f"{path}: environment variables not set: {', '.join(missing)}")
        raw = text
        substituted = {os.environ[m] for m in _ENV.findall(text)}
        secrets: set[str] = {v for v in substituted if len(v) >= 4}
        # values go into URLs: quote them, so a '/', '#' or '@' in a password stays a password
        text = _ENV.sub(lambda m: quote(os.environ[m.group(1)], safe=""), text)
        channels: list[Channel] = []
        problems: list[str] = []
        seen: dict[str, int] = {}
        entries = _entries(path, text)
        webhooks, hook_problems = subscribers_in(path, raw)
        problems += [_redact(p, secrets) for p in hook_problems]
        for hook in webhooks:
            seen[hook.name] = hook.line or 0
            secrets.add(hook.secret)
            secrets |= _secret_parts(hook.url, hook.label)
        for entry in entries:
            where = f"{path}:{entry.line}"
            channel, problem = _channel(entry)
            if channel is None:
                problems.append(f"{where}: {_redact(problem, secrets)}")
                continue
            secrets |= _secret_parts(channel.url, channel.label)
            if channel.name in seen:
                problems.append(f"{where}: a channel named '{channel.name}' is already on line "
                                f"{seen[channel.name]}; give each channel its own `name:`")
                continue
            seen[channel.name] = entry.line
            channels.append(channel)
        if problems:
            raise InvalidDefinition(f"{path}: the channels file is refused; nothing was changed "
                                    "(see docs/notifications.md)", details=problems)
        if not channels and not webhooks:
            raise InvalidDefinition(f"{path}: no services configured under `urls:`; see "
                                    "docs/notifications.md")
        return cls(channels, secrets, str(path), webhooks)

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

    def subscriber(self, name: str) -> Subscriber | None:
        return next((c for c in self.webhooks if c.name == name), None)

    def for_operators(self) -> list[Channel]:
        """Where reports for the people who run qip_flow go: the channel named or tagged
        ``operators`` (and the default file when no channels file is given)."""
        return [c for c in self.channels if c.name == OPERATORS or OPERATORS in c.tags]

    def redact(self, text: str) -> str:
        return _redact(text, self.secrets)

    def send(self, channel: Channel, *, email: str | None, subject: str, text: str, html: str,
             card: str, headers: dict[str, str] | None = None) -> SendResult:
        """One message on a connection of its own (see :meth:`sending` for a batch)."""
        with self.sending() as sender:
            return sender.send(channel, email=email, subject=subject, text=text, html=html,
                               card=card, headers=headers)

    @contextmanager
    def sending(self) -> Iterator[Sender]:
        """A :class:`Sender` for a batch of messages, its connections closed afterwards."""
        sender = Sender(self)
        try:
            yield sender
        finally:
            sender.close()


class Sender:
    """Sends a batch's messages over connections kept for the batch: one SMTP connection per
    relay and one HTTP client (one TLS context) for webhook subscribers. Each message still has
    its own outcome, so a refused recipient is retried alone."""

    def __init__(self, channels: Channels) -> None:
        self.channels = channels
        self._mail: dict[mail.Relay, mail.Connection] = {}
        self._http: httpx.Client | None = None

    def send(self, channel: Channel, *, email: str | None, subject: str, text: str, html: str,
             card: str, headers: dict[str, str] | None = None) -> SendResult:
        """One try on one channel; what went wrong comes back redacted. Email is our own
        text and HTML parts (:mod:`qip_flow.notify.mail`); Teams gets ``card``, the Adaptive
        Card payload; the local file and any other service get the text part. An error no
        channel foresaw (a password smtplib cannot encode, a library's bug) is this try's
        failure, not the dispatcher's: raised, it would leave the try uncounted and the same
        message would stop every dispatch run after it."""
        try:
            return self._send(channel, email=email, subject=subject, text=text, html=html,
                              card=card, headers=headers)
        except Exception as exc:
            log.exception("sending on %s failed unexpectedly", channel.label)
            return SendResult(False, self.channels.redact(
                f"{channel.label}: {type(exc).__name__}: {exc}"), False)

    def _send(self, channel: Channel, *, email: str | None, subject: str, text: str, html: str,
              card: str, headers: dict[str, str] | None) -> SendResult:
        if channel.kind == "email":
            relay = channel.relay
            if relay is None:
                return SendResult(False, f"{channel.label}: not an SMTP relay URL", True)
            connection = self._mail.get(relay)
            if connection is None:
                connection = self._mail[relay] = mail.Connection(relay)
            ok, error, permanent = connection.send(mail.build(
                relay, to=email or "", subject=subject, text=text, html=html, headers=headers))
            return SendResult(ok, self.channels.redact(error), permanent)
        if channel.kind == "teams":
            return self._post_card(channel, card)
        apprise = _apprise()
        services = apprise.Apprise()
        if not services.add(channel.url):
            return SendResult(False, f"{channel.label}: Apprise cannot use this URL", True)
        with apprise.LogCapture(level=logging.WARNING) as logs:
            result = services.notify(body=text, title=subject,
                                     body_format=apprise.NotifyFormat.TEXT)
        return SendResult(True) if result else self._failure(logs.getvalue())

    def post(self, target: Subscriber, message_id: str, body: str) -> SendResult:
        """A signed POST to a webhook subscriber, on the batch's HTTP client."""
        if self._http is None:
            self._http = http_client()
        answer = post(target, message_id, body, redact=self.channels.redact, client=self._http)
        return SendResult(answer.ok, answer.error, answer.permanent)

    def connections(self) -> int:
        """SMTP connections opened so far (one per relay per batch, unless one was dropped)."""
        return sum(c.opened for c in self._mail.values())

    def close(self) -> None:
        for connection in self._mail.values():
            connection.close()
        self._mail.clear()
        if self._http is not None:
            self._http.close()
            self._http = None

    def _post_card(self, channel: Channel, card: str) -> SendResult:
        """The Adaptive Card to the Power Automate Workflows trigger: Apprise's own URL
        handling and transport, our payload instead of its Markdown conversion."""
        apprise = _apprise()
        try:
            options = _card_workflows().parse_url(channel.url)
            service = _card_workflows()(json.loads(card), **(options or {}))
        except (TypeError, ValueError) as exc:
            return SendResult(False, f"{channel.label}: {self.channels.redact(str(exc))}", True)
        with apprise.LogCapture(level=logging.WARNING) as logs:
            ok = service.send(body="", title="")
        return SendResult(True) if ok else self._failure(logs.getvalue())

    def _failure(self, logged: str) -> SendResult:
        error = self.channels.redact(" ".join(logged.split()))[-500:] or "delivery failed"
        code = re.search(r"error=(\d{3})", error)
        permanent = bool(code and code.group(1).startswith("4") and code.group(1) not in
                         ("408", "429"))
        return SendResult(False, error, permanent)


@cache
def _card_workflows() -> type:
    """Apprise's Workflows service posting a card we built (it is not registered with
    Apprise: only :meth:`Sender._post_card` makes one)."""
    _apprise()
    from apprise.plugins.workflows import NotifyWorkflows

    class CardWorkflows(NotifyWorkflows):  # type: ignore[misc]
        def __init__(self, payload: dict[str, Any], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self._payload = payload

        def gen_payload(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return self._payload

    return CardWorkflows


def _entries(path: Path, text: str) -> list[_Entry]:
    """The services of an Apprise YAML file, each with its line, its tags (the file's global
    tags included) and its ``name:`` (ours, taken out before Apprise reads the options); its
    ``webhooks:`` are read by :mod:`qip_flow.notify.webhooks` (Apprise never sees them)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        raise InvalidDefinition(f"{at}: not valid YAML ({getattr(exc, 'problem', exc)}); check "
                                "indentation and quoting") from None
    if not isinstance(data, dict) or not isinstance(root, yaml.MappingNode):
        raise InvalidDefinition(f"{path}: not an Apprise YAML configuration (a mapping with "
                                "`version: 1` and `urls:`); see docs/notifications.md")
    nodes = {k.value: (k, v) for k, v in root.value}
    unknown = [k for k in data if k not in _TOP_LEVEL]
    if unknown:
        key = nodes[str(unknown[0])][0] if str(unknown[0]) in nodes else root
        raise InvalidDefinition(f"{path}:{key.start_mark.line + 1}: unknown key '{unknown[0]}'; "
                                f"a channels file has {', '.join(sorted(_TOP_LEVEL))}")
    if "urls" not in data and "webhooks" in data:
        return []
    urls, urls_node = data.get("urls"), nodes.get("urls", (root, root))[1]
    if not isinstance(urls, list) or not isinstance(urls_node, yaml.SequenceNode):
        raise InvalidDefinition(f"{path}:{urls_node.start_mark.line + 1}: `urls:` must be a list "
                                "of services; see docs/notifications.md")
    common = _tags(data.get("tag", data.get("tags")))
    out: list[_Entry] = []
    for item, node in zip(urls, urls_node.value, strict=True):
        line = node.start_mark.line + 1
        if isinstance(item, str):
            out.append(_Entry(item, {}, line, tags=set(common)))
            continue
        if not isinstance(item, dict):
            out.append(_Entry("", {}, line))
            continue
        url = next((str(k) for k in item if "://" in str(k)), "")
        siblings = {str(k): v for k, v in item.items() if str(k) != url}
        children = item.get(url) if url else None
        child_nodes = next((v for k, v in node.value if str(k.value) == url), None) \
            if isinstance(node, yaml.MappingNode) else None
        if isinstance(children, list) and children:
            spots = [c.start_mark.line + 1 for c in child_nodes.value] \
                if isinstance(child_nodes, yaml.SequenceNode) else [line] * len(children)
            options_list = [(c if isinstance(c, dict) else {}, spot)
                            for c, spot in zip(children, spots, strict=False)]
        else:
            options_list = [(children if isinstance(children, dict) else {}, line)]
        for options, spot in options_list:
            merged = {**siblings, **{str(k): v for k, v in options.items()}}
            name = merged.pop("name", None)
            tags = _tags(merged.pop("tag", merged.pop("tags", None))) | common
            out.append(_Entry(url, merged, spot if len(options_list) > 1 else line,
                              str(name).strip() if name is not None else None, tags))
    return out


def _tags(value: Any) -> set[str]:
    if isinstance(value, str):
        return {t.strip() for t in re.split(r"[,\s]+", value) if t.strip()}
    if isinstance(value, list):
        return {str(t).strip() for t in value if str(t).strip()}
    return set()


def _channel(entry: _Entry) -> tuple[Channel | None, str]:
    """The channel an entry describes, or why it cannot be one."""
    if not entry.url:
        return None, "each service is a URL (e.g. `- mailtos://user:pass@host:`) with its tags"
    if entry.name is not None and not _NAME.fullmatch(entry.name):
        return None, (f"name '{entry.name}': use letters, digits, '-', '_', '.' and ':' "
                      "(e.g. board-teams)")
    if not entry.tags:
        return None, ("no tag: say whose messages this channel carries (email for the relay, a "
                      "person's id, role:LEVEL, group:GROUP-SLUG, all, or operators)")
    config_text = yaml.safe_dump({"version": 1, "urls": [
        {entry.url: [{**entry.options, "tag": sorted(entry.tags)}]}]})
    apprise = _apprise()
    config = apprise.AppriseConfig()
    services = apprise.Apprise()
    with apprise.LogCapture(level=logging.WARNING) as logs:
        found = config.add_config(config_text, format="yaml") and services.add(config) and \
            list(services.find(match_always=False))
    if not found or len(found) != 1:
        scheme = urlsplit(entry.url).scheme or "(none)"
        reason = next((line.split(" - ", 2)[-1] for line in logs.getvalue().splitlines()
                       if line.strip()), "")
        return None, (f"Apprise cannot use this {scheme}:// URL (unknown scheme or malformed)"
                      + (f": {reason}" if reason else "") + "; see docs/notifications.md")
    service = found[0]
    private, public = service.url(privacy=False), service.url(privacy=True)
    schema = urlsplit(private).scheme
    if "email" in entry.tags:
        if schema not in ("mailto", "mailtos"):
            return None, (f"the `email` tag marks the SMTP relay (mailto:// or mailtos://), "
                          f"not a {schema}:// service")
        kind = "email"
    else:
        kind = "teams" if schema in ("workflow", "workflows") else schema
    name = entry.name or ("email" if kind == "email" else f"{kind}:{'+'.join(sorted(entry.tags))}")
    relay = mail.Relay.from_service(service) if kind == "email" else None
    return Channel(name, kind, private, public, set(entry.tags), entry.line, relay), ""


def _redact(text: str, secrets: set[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "****").replace(quote(secret, safe=""), "****")
    return text


def _secret_parts(private: str, public: str) -> set[str]:
    """What the masked URL hides (passwords, tokens, signatures), both as Apprise writes them
    (URL-encoded) and as a person wrote them."""
    split_private = re.split(r"[/:@?&=]", private)
    split_public = set(re.split(r"[/:@?&=]", public))
    hidden = {p for p in split_private if len(p) >= 4 and p not in split_public}
    return hidden | {unquote(p) for p in hidden}
