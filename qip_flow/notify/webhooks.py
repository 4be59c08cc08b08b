"""Webhook subscribers and how a message reaches one: a signed HTTP POST in the style of
Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64
HMAC-SHA256 of "id.timestamp.body">``). Subscribers are written in the channels file under
``webhooks:`` (name, url, secret, events, plans) — read here without Apprise, which never sees
them — or registered through the API (``services/webhooks.py``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from qip_flow.errors import InvalidDefinition

if TYPE_CHECKING:
    import httpx

EVENTS = ("plan.state_changed", "plan.rag_changed", "plan.closed", "escalation.raised")
PREFIX = "webhook:"  # a subscriber's channel name in the outbox: "webhook:bi-feed"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,59}")
_ENV = re.compile(r"\$\{(\w+)\}")
MIN_SECRET = 24


@dataclass
class Subscriber:
    """One subscriber: where to POST, the secret to sign with, the events it wants (none named:
    every event) and the plans (``service:NAME``, ``plan:ID``; none: every plan)."""

    name: str  # "webhook:bi-feed"
    url: str = field(repr=False)
    secret: str = field(default="", repr=False)
    events: tuple[str, ...] = ()
    plans: tuple[str, ...] = ()
    line: int | None = None
    kind: str = "webhook"

    @property
    def label(self) -> str:
        return f"webhook {mask_url(self.url)}"


@dataclass
class Answer:
    ok: bool
    error: str = ""
    permanent: bool = False


def mask_url(url: str) -> str:
    """The URL without credentials or query (where a receiver's own token may sit)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def url_problem(url: str) -> str:
    """Why a subscriber's URL cannot be used (empty when it can): https, or http on loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
        return f"url '{mask_url(url)[:200]}' is not an http(s) address"
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        return f"url '{mask_url(url)}': use https (plain http only to this machine, for testing)"
    return ""


def events_problem(events: Any) -> str:
    if events is None:
        return ""
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        return f"events: give a list of {', '.join(EVENTS)}"
    unknown = [e for e in events if e not in EVENTS]
    return f"events: {', '.join(unknown)} unknown; events: {', '.join(EVENTS)}" if unknown else ""


def name_problem(name: str) -> str:
    return "" if _NAME.fullmatch(name) else (
        f"name '{name[:80]}': letters, digits, '-', '_' or '.' (at most 60), e.g. bi-feed")


def subscriber(item: Any, *, line: int | None = None) -> tuple[Subscriber | None, str]:
    """A subscriber from its settings (name, url, secret, events, plans), or why not."""
    if not isinstance(item, dict):
        return None, "each subscriber is a mapping with name, url and secret"
    unknown = sorted(set(map(str, item)) - {"name", "url", "secret", "events", "plans"})
    name, url, secret = (str(item.get(k) or "").strip() for k in ("name", "url", "secret"))
    plans = item.get("plans") or []
    problem = (f"unknown key '{unknown[0]}' (name, url, secret, events, plans)" if unknown
               else name_problem(name) or url_problem(url) or events_problem(item.get("events"))
               or (f"secret: give a signing secret of at least {MIN_SECRET} characters (e.g. "
                   "${QIP_WEBHOOK_SECRET}, or whsec_… as Standard Webhooks writes it)"
                   if len(secret) < MIN_SECRET else "")
               or ("plans: a list of 'service:NAME' or 'plan:ID'"
                   if not isinstance(plans, list) else ""))
    if problem:
        return None, problem
    return Subscriber(PREFIX + name, url, secret, tuple(item.get("events") or ()),
                      tuple(str(p) for p in plans), line), ""


def subscribers_in(path: Path, text: str) -> tuple[list[Subscriber], list[str]]:
    """The ``webhooks:`` of a channels file (``${NAME}`` read from the environment), and the
    problems found, each with its line."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return [], []  # the channels file reader names the YAML error
    if not isinstance(data, dict) or "webhooks" not in data or not isinstance(root, yaml.MappingNode):
        return [], []
    node = next(v for k, v in root.value if k.value == "webhooks")
    if not isinstance(data["webhooks"], list) or not isinstance(node, yaml.SequenceNode):
        return [], [f"{path}:{node.start_mark.line + 1}: `webhooks:` must be a list of "
                    "subscribers (name, url, secret, events, plans)"]
    found: list[Subscriber] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for item, item_node in zip(data["webhooks"], node.value, strict=True):
        line = item_node.start_mark.line + 1
        if isinstance(item, dict):
            missing = sorted({m for v in item.values() if isinstance(v, str)
                              for m in _ENV.findall(v)} - set(os.environ))
            if missing:
                problems.append(f"{path}:{line}: webhooks: environment variables not set: "
                                f"{', '.join(missing)}")
                continue
            item = {k: _ENV.sub(lambda m: os.environ[m.group(1)], v) if isinstance(v, str) else v
                    for k, v in item.items()}
        found_one, problem = subscriber(item, line=line)
        if found_one is None:
            problems.append(f"{path}:{line}: webhooks: {problem}")
        elif found_one.name in seen:
            problems.append(f"{path}:{line}: webhooks: '{found_one.name}' is already on line "
                            f"{seen[found_one.name]}; give each subscriber its own name")
        else:
            seen[found_one.name] = line
            found.append(found_one)
    return found, problems


def read_subscribers(path: Path | None) -> list[Subscriber]:
    """The channels file's subscribers (none without a file), refused whole on a problem."""
    if path is None or not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidDefinition(f"{path}: cannot read the channels file ({exc})") from None
    found, problems = subscribers_in(path, text)
    if problems:
        raise InvalidDefinition(f"{path}: the channels file is refused; nothing was changed "
                                "(see docs/api.md, webhooks)", details=problems)
    return found


def signing_key(secret: str) -> bytes:
    """A Standard Webhooks secret (``whsec_`` + base64) as its key bytes; any other secret as
    its UTF-8 bytes."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except ValueError:
            pass
    return secret.encode()


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """``v1,`` + base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(signing_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def http_client(timeout: float = 10.0) -> httpx.Client:
    """An HTTP client for a batch of POSTs: one TLS context and its connections kept for the
    batch. Redirects are not followed."""
    import httpx

    return httpx.Client(timeout=timeout, follow_redirects=False)


def post(target: Subscriber, message_id: str, body: str, *,
         redact: Callable[[str], str] = lambda text: text,
         client: httpx.Client | None = None) -> Answer:
    """One signed POST: 2xx is delivered; 410 Gone is final; anything else (another status,
    no answer) is tried again later with back-off. Without ``client``, a client of its own."""
    import httpx

    if client is None:
        with http_client() as own:
            return post(target, message_id, body, redact=redact, client=own)
    timestamp = int(time.time())
    headers = {"content-type": "application/json", "user-agent": "qip_flow-webhooks",
               "webhook-id": message_id, "webhook-timestamp": str(timestamp),
               "webhook-signature": signature(target.secret, message_id, timestamp, body)}
    try:
        response = client.post(target.url, content=body.encode(), headers=headers)
    except httpx.HTTPError as exc:
        return Answer(False, redact(f"{target.label}: {type(exc).__name__}: {exc}")[-500:])
    if 200 <= response.status_code < 300:
        return Answer(True)
    return Answer(False, redact(f"{target.label}: answered HTTP {response.status_code}"),
                  permanent=response.status_code == 410)
