"""Shared steps of the API tests: the web application in this process over a runtime (httpx
through Starlette's test client), tokens, a signed-in person's session with its form token, and
a plain-HTTP webhook receiver on loopback that records each POST and answers as scripted.
Nothing here is a pytest plugin."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi.testclient import TestClient

from qip_flow.runtime import Runtime
from qip_flow.services import identity, tokens
from qip_flow.web.app import create_app
from qip_flow.web.config import WebSettings

MAPLE = "service:Maple House"


def client(rt: Runtime, **settings: Any) -> TestClient:
    app = create_app(rt, WebSettings(base_url="http://testserver", **settings))
    return TestClient(app, raise_server_exceptions=False)


def token(rt: Runtime, name: str = "emar-feed", scopes: tuple[str, ...] = ("measurements:write",),
          plans: tuple[str, ...] = (MAPLE,)) -> dict[str, str]:
    """A new token's Authorization header."""
    made, _ = tokens.create(rt, name=name, scopes=list(scopes), plans=list(plans), by="cevans")
    return {"Authorization": f"Bearer {made}"}


def session_of(rt: Runtime, web: TestClient, person: str) -> dict[str, str]:
    """Sign ``person`` in (as the development sign-in does) on ``web``; returns the header
    carrying the session's form token, for requests that change something."""
    opened = identity.open_session(rt, person, "dev")
    web.cookies.set("qip_session", opened)
    return {"X-CSRF-Token": identity.csrf_token(identity.key_of(rt), identity.token_hash(opened))}


@dataclass
class Hook:
    path: str
    headers: dict[str, str]
    body: str
    status: int

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


def verify(secret: str, hook: Hook) -> bool:
    """The Standard Webhooks check, written from the specification (not from qip_flow)."""
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") \
        else secret.encode()
    signed = f"{hook.headers['webhook-id']}.{hook.headers['webhook-timestamp']}.{hook.body}"
    expected = base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(f"v1,{expected}", given)
               for given in hook.headers["webhook-signature"].split())


class Receiver:
    """Records every POST; answers each with the next scripted status, then 200."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self._script: deque[int] = deque()
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    status = receiver._script.popleft() if receiver._script else 200
                    receiver.hooks.append(Hook(self.path, {k.lower(): v for k, v in self.headers.items()},
                                               body.decode(), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(self, *statuses: int) -> None:
        self._script.extend(statuses)

    def delivered(self) -> list[Hook]:
        return [h for h in self.hooks if 200 <= h.status < 300]


@contextmanager
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found._thread.start()
    try:
        yield found
    finally:
        found._server.shutdown()
        found._server.server_close()
