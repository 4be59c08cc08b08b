"""Who is calling the API, proved: a token (``Authorization: Bearer qip_…``) is a service
account; a signed-in browser session is its person (for the pages' own scripts), whose unsafe
requests carry the form token in ``X-CSRF-Token``. Each caller gets a token bucket (requests
per minute, refilled continuously); an empty bucket answers 429 with ``Retry-After``.

The buckets live in the process: with several server workers each keeps its own, so a caller
may send up to the limit to each worker (the limit is per worker, as docs/api.md says)."""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from dataclasses import dataclass

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qip_flow.errors import NotAuthenticated, NotPermitted
from qip_flow.runtime import Runtime
from qip_flow.services import identity, tokens
from qip_flow.services.policy import Actor
from qip_flow.web.api.problems import BodyTooLarge, RateLimited
from qip_flow.web.config import WebSettings

CSRF_HEADER = "x-csrf-token"
SESSION_COOKIE = "qip_session"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
log = logging.getLogger("qip_flow.api")


@dataclass
class Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per caller: ``per_minute`` requests a minute, in bursts of up to
    ``burst``."""

    def __init__(self, per_minute: int, burst: int | None = None) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst or max(1, min(per_minute, 100)))
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def take(self, who: str) -> int:
        """0 when the request may go ahead, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(who) or Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
            bucket.at = now
            self._buckets[who] = bucket
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0
            return max(1, math.ceil((1 - bucket.tokens) / self.rate))


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _limit(request: Request, who: str) -> None:
    wait = request.app.state.limiter.take(who)
    if wait:
        log.warning("API rate limit", extra={"caller": who, "path": request.url.path})
        raise RateLimited(wait, who)


def caller(request: Request) -> Actor:
    """The proven caller of this request, once per request; 401 without proof, 429 over the
    caller's rate."""
    if hasattr(request.state, "actor"):
        return request.state.actor
    rt = runtime(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    address = request.client.host if request.client else "unknown"
    if header:
        if scheme.lower() != "bearer" or not token.strip():
            _limit(request, f"address {address}")
            raise NotAuthenticated("Authorization: give 'Bearer TOKEN' with an API token")
        try:
            actor = tokens.authenticate(rt, token.strip())
        except NotAuthenticated:
            _limit(request, f"address {address}")
            raise
        who = f"token {actor.account.name}" if actor.account else actor.name
    else:
        settings: WebSettings = request.app.state.settings
        signin = identity.session_for(rt, request.cookies.get(SESSION_COOKIE), settings.lifetimes)
        if signin is None:
            _limit(request, f"address {address}")
            raise NotAuthenticated("no API token and no signed-in session: send "
                                   "'Authorization: Bearer TOKEN' (docs/api.md)")
        if request.method in UNSAFE:
            expected = identity.csrf_token(identity.key_of(rt), signin.token_hash)
            if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), expected):
                raise NotPermitted("a browser session's request that changes something carries "
                                   "the page's form token in the X-CSRF-Token header")
        actor = Actor(signin.person, door="api", scope=signin.scope,
                      full_signin_at=signin.full_signin_at)
        who = f"person {signin.person.id}"
    _limit(request, who)
    log.info("API request", extra={"caller": who, "method": request.method,
                                   "path": request.url.path})
    request.state.actor = actor
    return actor


class BodyLimit:
    """Refuse a body larger than ``limit`` bytes with a 413: at once when ``Content-Length``
    says so, else as soon as the bytes received pass it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            scope.setdefault("state", {})["too_large"] = True
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted, send)


def refuse_too_large(request: Request) -> None:
    """A dependency of every operation: a declared body over the limit is refused before it is
    read."""
    if getattr(request.state, "too_large", False):
        raise BodyTooLarge(request.app.state.max_body)
