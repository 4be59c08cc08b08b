"""Loopback servers and helpers for the notification tests: a real SMTP server (aiosmtpd), a
real HTTPS webhook receiver standing in for Power Automate Workflows (a self-signed certificate
from trustme, reached with ``?verify=no``), Apprise channels files that point at them, and the
steps every scenario shares (load the examples, approve a plan, play mornings on the clock).

Test modules import what they need and wrap the servers in their own small fixtures; nothing
here is a pytest plugin."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import (
    PG_URL,
    drop_postgres_schema,
    engines_closed,
    make_postgres_database,
    require_postgres,
)
from sqlalchemy import text
from sqlmodel import SQLModel, select

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, loading, notifications
from qip_flow.store.db import Database
from qip_flow.store.models import Delivery, Notification, Person

EXAMPLES = SHIPPED_CONFIG / "examples"
ORGANISATION = EXAMPLES / "organisation.yaml"
PLANS = EXAMPLES / "plans"
MEDICATION = PLANS / "QIP-2026-014-medication.yaml"
SENDER = "qip@riverside-care.example"
#: a second member of the Board, for an organisation file of its own (a `people:` entry)
BOARD_MEMBER = """\
  - id: oshaw
    name: Olivia Shaw
    email: olivia.shaw@riverside-care.example
    role: Chair of the Board
    level: board
    groups: [Board]
"""
ACTION_ID = re.compile(r"QIP-\d{4}-\d{3}/A\d+")
RULE_ID = re.compile(r"\(rule ([\w.-]+)\)")

# aiosmtpd logs a deprecation warning of its own on every login; it says nothing about us
logging.getLogger("mail.log").setLevel(logging.ERROR)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- SMTP ------------------------------------------------------------------------------------


@dataclass
class Mail:
    """One message as the SMTP server received it."""

    envelope_to: list[str]
    message: EmailMessage
    login: str | None = None
    day: date | None = None  # the simulated morning it was dispatched on (set by the test)

    @property
    def to(self) -> str:
        return str(self.message["To"])

    @property
    def subject(self) -> str:
        return " ".join(str(self.message["Subject"]).split())

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        return part.get_content().replace("\r\n", "\n") if part is not None else ""

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        return part.get_content().replace("\r\n", "\n") if part is not None else ""

    @property
    def rule(self) -> str:
        """The rule that sent it (qip_flow's ``X-QIP-Rule`` header)."""
        if self.message["X-QIP-Rule"]:
            return str(self.message["X-QIP-Rule"])
        found = RULE_ID.search(self.html)
        return found.group(1) if found else ""

    @property
    def about(self) -> str:
        """The action it is about (``X-QIP-About``; empty for a plan or a digest)."""
        found = ACTION_ID.fullmatch(str(self.message["X-QIP-About"] or ""))
        return found.group(0) if found else ""

    @property
    def item(self) -> str:
        """What it is about: an action, a plan, or the reader of a digest (``X-QIP-About``)."""
        return str(self.message["X-QIP-About"] or "")

    @property
    def kind(self) -> str:
        return str(self.message["X-QIP-Kind"] or "")


class _SmtpHandler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_MAIL(self, smtp: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        with self.server._arrived:
            self.server.peers.add(session.peer)
        if self.server.drop_at is not None and \
                getattr(session, "carried", 0) >= self.server.drop_at:
            smtp.transport.close()  # as a relay that limits messages per connection
            return "421 4.7.0 too many messages on this connection, closing"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, _smtp: Any, _session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:
        code = self.server.refuse.get(address)
        if code is not None:
            return f"{code} mailbox {address} refused (test)"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, _server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if isinstance(session.auth_data,
                                                               LoginPassword) else None
        session.carried = getattr(session, "carried", 0) + 1
        count = self.server.received(Mail(list(envelope.rcpt_tos), message, login))
        if self.server.delay:
            await asyncio.sleep(self.server.delay)
        if count == self.server.hold_at:
            while not self.server.released.is_set():  # the sender waits for our answer
                await asyncio.sleep(0.01)
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on ``127.0.0.1:port``. It may be started late on a port reserved in advance (a
    relay that is down for a while), answer slowly (``delay`` seconds per message, after
    recording it), keep the sender of message number ``hold_at`` waiting for its answer until
    ``released`` is set, require a password (plain AUTH without TLS, loopback only), refuse
    some recipients (``refuse``: address → reply code, e.g. 450 or 550), and drop a connection
    once it has carried ``drop_at`` messages. ``connections`` counts the connections that
    sent mail."""

    def __init__(self, port: int | None = None, *, delay: float = 0.0,
                 hold_at: int | None = None, password: str | None = None,
                 refuse: dict[str, int] | None = None, drop_at: int | None = None) -> None:
        self.port = port or free_port()
        self.delay = delay
        self.hold_at = hold_at
        self.released = threading.Event()
        self.password = password
        self.refuse = dict(refuse or {})
        self.drop_at = drop_at
        self.peers: set[Any] = set()  # (host, port) of each connection that sent MAIL
        self.messages: list[Mail] = []
        self._taken = 0
        self._arrived = threading.Condition()
        self._controller: Controller | None = None

    def received(self, mail: Mail) -> int:
        with self._arrived:
            self.messages.append(mail)
            self._arrived.notify_all()
            return len(self.messages)

    def _authenticate(self, _server: Any, _session: Any, _envelope: Any, _mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and self.password is not None and (
            auth_data.password.decode() == self.password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def start(self) -> SmtpServer:
        options: dict[str, Any] = {}
        if self.password is not None:
            options = {"auth_require_tls": False,
                       "authenticator": self._authenticate}
        self._controller = Controller(_SmtpHandler(self), hostname="127.0.0.1", port=self.port,
                                      **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def url(self, *, user: str | None = None, password: str | None = None) -> str:
        """The relay's Apprise URL; ``password`` may be a ``${NAME}`` reference."""
        login = f"{user}:{password}@" if user else ""
        return f"mailto://{login}127.0.0.1:{self.port}?from={SENDER}"

    @property
    def connections(self) -> int:
        with self._arrived:
            return len(self.peers)

    def take(self, day: date | None = None) -> list[Mail]:
        """The messages received since the last call, labelled with ``day``."""
        with self._arrived:
            new = self.messages[self._taken:]
            self._taken = len(self.messages)
        for mail in new:
            mail.day = day
        return new

    def wait_for(self, count: int, timeout: float = 60.0) -> bool:
        """Block until ``count`` messages have arrived (a safety limit, not an assertion)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)


@contextmanager
def smtp_server(**options: Any) -> Iterator[SmtpServer]:
    server = SmtpServer(**options).start()
    try:
        yield server
    finally:
        server.stop()


# --- HTTPS webhook (Teams through Power Automate Workflows) --------------------------------


@dataclass
class Hook:
    """One POST the receiver answered."""

    path: str
    query: dict[str, list[str]]
    raw: str
    status: int

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.raw)

    @property
    def card(self) -> dict[str, Any]:
        """The Adaptive Card's content."""
        [attachment] = self.payload["attachments"]
        return dict(attachment["content"])

    def elements(self) -> list[dict[str, Any]]:
        """Every element of the card's body, containers opened, in order."""
        out: list[dict[str, Any]] = []

        def walk(items: list[dict[str, Any]]) -> None:
            for item in items:
                out.append(item)
                walk(item.get("items", []))

        for a in self.payload.get("attachments", []):
            walk(a.get("content", {}).get("body", []))
        return out

    def blocks(self) -> list[dict[str, Any]]:
        return [b for b in self.elements() if b.get("type") == "TextBlock"]

    @property
    def facts(self) -> dict[str, str]:
        return {f["title"]: f["value"] for b in self.elements() if b.get("type") == "FactSet"
                for f in b["facts"]}

    @property
    def buttons(self) -> list[dict[str, Any]]:
        return list(self.card.get("actions", []))

    @property
    def title(self) -> str:
        return " ".join(b["text"] for b in self.blocks() if b.get("id") == "title")

    @property
    def card_text(self) -> str:
        """The card's words as they read: its text blocks and facts (Markdown escapes kept)."""
        lines = [b["text"] for b in self.blocks() if b.get("id") != "title"]
        return "\n".join(lines + [f"{k}: {v}" for k, v in self.facts.items()])

    @property
    def delivered(self) -> bool:
        return 200 <= self.status < 300


class WebhookReceiver:
    """A threaded HTTPS server on loopback that records each POST and answers with the next
    status of its script (``answer(500, 200)``), then ``status`` (202, as Power Automate does)."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []
        self.status = 202
        self._script: deque[int] = deque()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    status = receiver._script.popleft() if receiver._script else receiver.status
                    parts = urlsplit(self.path)
                    receiver.hooks.append(Hook(parts.path, parse_qs(parts.query),
                                               raw.decode("utf-8"), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        loopback_ca().issue_cert("127.0.0.1").configure_cert(context)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def answer(self, *statuses: int) -> None:
        with self._lock:
            self._script.extend(statuses)

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, workflow: str, signature: str) -> str:
        return f"workflows://127.0.0.1:{self.port}/{workflow}/{signature}?verify=no"


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


_CA: list[trustme.CA] = []


def loopback_ca() -> trustme.CA:
    """The certificate authority that signs the loopback receivers' certificates."""
    if not _CA:
        _CA.append(trustme.CA())
    return _CA[0]


def trust_loopback(monkeypatch: pytest.MonkeyPatch, folder: Path) -> dict[str, str]:
    """Make the loopback CA the only one OpenSSL loads by default (``SSL_CERT_FILE``), for this
    process and, through the returned environment, for subprocesses: a TLS client that
    verifies by default trusts the loopback receivers, and one that builds a default context
    loads one certificate, not the system store. qip_flow needs neither (email builds no TLS
    context over plain SMTP, one per process otherwise; the webhook is reached with
    ``?verify=no``, as the design notes say)."""
    path = folder / "loopback-ca.pem"
    loopback_ca().cert_pem.write_to_path(str(path))
    monkeypatch.setenv("SSL_CERT_FILE", str(path))
    return {"SSL_CERT_FILE": str(path)}


# --- channels, runtimes, databases ---------------------------------------------------------


@contextmanager
def scratch_database(kind: str, folder: Path) -> Iterator[Database]:
    """An initialised, empty database of ``kind`` (sqlite or postgres), removed afterwards;
    for fixtures wider than the per-test ``database``."""
    if kind == "sqlite":
        db = Database(f"sqlite:///{folder / 'qip.db'}")
        db.init(simulation=True)
        try:
            yield db
        finally:
            db.dispose()
        return
    require_postgres()
    schema = "qip_t_" + os.urandom(6).hex()
    db = make_postgres_database(schema)
    try:
        db.init(simulation=True)
        yield db
    finally:
        db.dispose()
        drop_postgres_schema(schema)



def write_channels(path: Path, services: Iterable[tuple[str, str]]) -> Path:
    """An Apprise YAML channels file: (url, comma-separated tags) per service."""
    lines = ["version: 1", "urls:"]
    for url, tags in services:
        lines += [f"  - {url}:", f"      - tag: {tags}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rules_with(folder: Path, old: str, new: str) -> Path:
    """A copy of the shipped rules and workflows with one text of rules/reminders.yaml
    replaced (e.g. the ladder's digest settings), to publish with :func:`publish_rules`."""
    import shutil

    for part in ("rules", "workflows"):
        shutil.copytree(SHIPPED_CONFIG / part, folder / part, dirs_exist_ok=True)
    path = folder / "rules" / "reminders.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} is not in the shipped reminders rules"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return folder


#: the ladder with no leaders' or groups' digest: every rung goes out as it is decided
NO_LEADERS_DIGEST = ("  digest_levels: [senior, board]\n  digest_groups: [Board]\n",
                     "  digest_levels: []\n  digest_groups: []\n")


def publish_rules(rt: Runtime, folder: Path) -> Runtime:
    """Put ``folder``'s rules in force (signed by the senior sponsor, as a variation is) and
    return a runtime under them."""
    from qip_flow.services import publishing

    publishing.publish(rt, folder, by="dadeyemi")
    return Runtime(db=rt.db, clock=rt.clock, config_dir=folder,
                   channels_file=rt.channels_file)


def make_runtime(db: Database, channels: Path | None) -> Runtime:
    return Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG,
                   channels_file=str(channels) if channels else None)


def database_url(db: Database) -> str:
    """The URL another process uses for ``db``: the SQLite file, or the PostgreSQL test schema
    through ``search_path``."""
    if db.is_sqlite:
        return db.url
    with db.engine.connect() as conn:
        schema = conn.execute(text("select current_schema()")).scalar_one()
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


def dump(db: Database) -> str:
    """Every value of every row of every table, as one text (to look for secrets)."""
    out: list[str] = []
    with db.engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                out.append(" ".join(str(v) for v in row))
    return "\n".join(out)


def qip(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m qip_flow ARGS`` as a subprocess, with no QIP_* settings inherited."""
    return subprocess.run([sys.executable, "-m", "qip_flow", *args], capture_output=True,
                          text=True, env=clean_env(env), cwd=cwd, timeout=timeout)


def qip_here(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             *args: str) -> tuple[int, str, str]:
    """``qip ARGS`` through the same entry point, in this process: (exit code, out, err)."""
    from qip_flow.cli.main import main

    for name in [k for k in os.environ if k.startswith("QIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "argv", ["qip", *args])
    capsys.readouterr()
    try:
        with engines_closed():
            main()
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out, err


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QIP_")}
    env.update({"COLUMNS": "1000", "PYTHONUNBUFFERED": "1", **(extra or {})})
    return env


# --- scenario steps ------------------------------------------------------------------------


def load_examples(rt: Runtime, *extra: Path) -> None:
    """The example organisation and plans (named files, not the folder, so other files that
    may sit in examples/ do not matter), plus any extra organisation or plan files."""
    rt.clock.set("2026-01-15")
    loading.load_files(rt, [ORGANISATION, PLANS, *extra], actor="test")


def approve_and_start(rt: Runtime, plan: str = "QIP-2026-014", *,
                      at: str = "2026-01-22T10:00") -> None:
    """Approved by the senior sponsor, started by the registered manager."""
    rt.clock.set(at)
    lifecycle.sign_off(rt, plan, "approval", by="dadeyemi")
    lifecycle.fire_event(rt, plan, "start", by="jpatel")


def medication_copies(folder: Path, count: int) -> list[Path]:
    """``count`` copies of the medication plan as new plans (QIP-2026-101 …): a portfolio."""
    folder.mkdir(parents=True, exist_ok=True)
    source = MEDICATION.read_text(encoding="utf-8")
    paths = []
    for n in range(count):
        plan_id = f"QIP-2026-{101 + n}"
        path = folder / f"{plan_id}.yaml"
        path.write_text(source.replace("id: QIP-2026-014", f"id: {plan_id}"), encoding="utf-8")
        paths.append(path)
    return paths


def portfolio(rt: Runtime, folder: Path, count: int) -> list[str]:
    """The examples plus ``count`` copies of the medication plan, each approved and started
    on 22 January with no progress afterwards."""
    copies = medication_copies(folder, count)
    load_examples(rt, *copies)
    ids = [p.stem for p in copies]
    for plan_id in ids:
        approve_and_start(rt, plan_id)
    return ids


def morning(day: date) -> datetime:
    return datetime.combine(day, time(8, 0), tzinfo=UTC)


def days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def play_mornings(rt: Runtime, smtp: SmtpServer, first: date, last: date,
                  after: Callable[[date, list[Mail]], None] | None = None) -> list[Mail]:
    """Each morning at 08:00: tick, dispatch, and label what arrived with the day."""
    got: list[Mail] = []
    for day in days(first, last):
        rt.clock.set(morning(day))
        notifications.tick(rt, worker="test")
        notifications.dispatch(rt, worker="test")
        new = smtp.take(day)
        got += new
        if after:
            after(day, new)
    return got


def emails(rt: Runtime) -> dict[str, str]:
    """Person id → email address, and back."""
    with rt.db.read() as session:
        people = session.exec(select(Person)).all()
    return {**{p.id: p.email or "" for p in people}, **{p.email or "": p.id for p in people}}


def sent_deliveries(rt: Runtime, channel: str | None = None) -> list[tuple[Delivery, Notification]]:
    with rt.db.read() as session:
        query = select(Delivery, Notification).join(
            Notification, Notification.id == Delivery.notification_id)
        if channel:
            query = query.where(Delivery.channel == channel)
        return [(d, n) for d, n in session.exec(query).all()]
