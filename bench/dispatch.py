"""Emails per second from qip_flow's outbox to an SMTP server on loopback, beside a floor of
plain ``smtplib`` on one connection measured in the same run, interleaved.

The SMTP server (aiosmtpd) runs on 127.0.0.1 in this process and offers STARTTLS with a
certificate from a throw-away CA (trustme); each program runs in a fresh child process with
``SSL_CERT_FILE`` unset, so OpenSSL reads the whole system CA store whenever a TLS context is
made — as on a default install. Each row is timed twice per round, over plain SMTP and over
STARTTLS, for several rounds; the table gives the median.

- **qip_flow dispatch**: a fresh SQLite database gets the shipped examples and N queued
  notifications with one pending email delivery each, written as the tick writes them (a
  reminder or escalation rule of rules/reminders.yaml about one of the examples' actions,
  rendered from qip_flow's templates, to the action's owner or their line manager). Timed:
  ``notifications.dispatch`` — what ``qip dispatch`` runs: claim, write each try before its
  send, send, write the outcome — until the outbox is empty. Every message must arrive, to the
  right person, and every delivery must be recorded as sent.
- **floors**: the same N messages (read from the same kind of database before the timer), sent
  with ``smtplib`` on one connection (STARTTLS with a context made once from the system store
  plus the test CA), with no database work: flattened to bytes before the timer (the SMTP
  conversation alone; the "× transport floor" column divides by this one), and built in the
  timer with the standard library's classic MIME classes (a multipart/alternative with a text
  and an HTML part, the cheapest correct build it offers: ``EmailMessage`` with a policy takes
  ten times as long).
- **baseline** (``--baseline DIR``): qip_flow's dispatch from another checkout (e.g. main
  before a change), run the same way.

Target (issue 15): at least 200 emails per second with the system CA store.

    python bench/dispatch.py [--messages 500] [--rounds 3] [--baseline DIR] [--profile]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from common import measure, run_child, table  # noqa: E402

TARGET = 200.0  # emails per second
SENDER = "qip@riverside-care.example"
NOW = "2026-03-02T10:00"  # a Monday morning in London: outside every channel's quiet hours
MODES = ("plain", "starttls")


# --- the SMTP server (this process) ----------------------------------------------------------


class SmtpServer:
    """aiosmtpd on 127.0.0.1 offering STARTTLS (not requiring it), counting what arrives and
    for whom, and the connections made."""

    def __init__(self, folder: Path) -> None:
        import trustme
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import SMTP

        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self.recipients: list[str] = []
        self.connections = 0
        self._lock = threading.Lock()
        server = self

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                with server._lock:
                    server.recipients.extend(envelope.rcpt_tos)
                return "250 Message accepted for delivery"

        class Counting(SMTP):
            def connection_made(self, transport: Any) -> None:
                if transport.get_extra_info("sslcontext") is None:  # not again at STARTTLS
                    with server._lock:
                        server.connections += 1
                super().connection_made(transport)

        ca = trustme.CA()
        self.ca_file = folder / "loopback-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
        with socket.socket() as probe:  # a free port: aiosmtpd's own start-up check needs one
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])

        class Controlled(Controller):
            def factory(self) -> SMTP:
                return Counting(self.handler, **self.SMTP_kwargs)

        self._controller = Controlled(Handler(), hostname="127.0.0.1", port=self.port,
                                      tls_context=tls, require_starttls=False)

    def start(self) -> SmtpServer:
        self._controller.start()
        self.take()  # the controller's own start-up check connected once
        return self

    def take(self) -> tuple[list[str], int]:
        """The recipients of what arrived since the last call, and the connections made."""
        with self._lock:
            got, self.recipients = self.recipients, []
            connections, self.connections = self.connections, 0
        return got, connections

    def stop(self) -> None:
        self._controller.stop()


# --- the programs (child processes) ---------------------------------------------------------


def queue(rt: Any, count: int) -> list[str]:
    """``count`` queued notifications, one pending email delivery each, as the tick writes them:
    the message rendered from qip_flow's templates for a reminder or escalation rule about one
    of the examples' actions. Returns the address each goes to."""
    from sqlmodel import col, select

    from qip_flow.decide.decisions import fill
    from qip_flow.notify import cards
    from qip_flow.notify.messages import render, subject_line
    from qip_flow.store.models import Action, Delivery, Finding, Notification, Person, Plan, Service

    rules = rt.rules.for_outcome("action", "notify")
    reminder = next(r for r in rules if r.then.params["kind"] == "reminder")
    escalation = next(r for r in rules if r.then.params["kind"] == "escalation"
                      and r.then.params["to"] == "line_manager")
    channel = next(c.name for c in rt.channels.channels if c.kind == "email")
    now = rt.clock.now()
    emails = []
    with rt.db.write() as session:
        people = {p.id: p for p in session.exec(select(Person)).all()}
        plans = {p.id: p for p in session.exec(select(Plan)).all()}
        services = {s.id: s.name for s in session.exec(select(Service)).all()}
        findings = {f.id: f for f in session.exec(select(Finding)).all()}
        actions = session.exec(select(Action).order_by(col(Action.id))).all()
        for i in range(count):
            action = actions[i % len(actions)]
            plan, owner = plans[action.plan_id], people[action.owner_id or ""]
            rule = escalation if i % 5 == 4 else reminder
            to = people[owner.line_manager_id or plan.sponsor_id] if rule is escalation else owner
            p = rule.then.params
            facts = {"action_id": action.id, "due_date": str(action.due), "revisions": 0,
                     "working_days_overdue": 5 + i % 7, "working_days_to_due": 10}
            headline = fill(p.get("headline") or rule.description, facts)
            subject = subject_line(p["kind"], action.description, headline)
            finding = findings.get(action.finding_id or "")
            message = render("notice", {
                "person": to, "kind": p["kind"], "sentence": subject, "ask": p.get("ask", ""),
                "plan": plan, "service": services[plan.service_id], "action": action,
                "finding": finding.description if finding else "", "owner_name": owner.name,
                "why": rule.description, "rule_id": rule.id, "rules_version": rt.rules.version},
                subject=subject, card=cards.card(title=subject, severity="attention",
                                                 facts=[("Action", action.description)]))
            key = f"{rule.id}|{action.id}|{to.id}|bench-{i}-{fill(p['occurrence'], facts)}"
            notification = Notification(
                key=key, rule_id=rule.id, kind=p["kind"], entity_id=action.id, plan_id=plan.id,
                recipient_id=to.id, subject=message.subject, body_text=message.text,
                body_html=message.html, card_text=message.card, state="queued",
                created_at=now, routed_at=now, rules_version=rt.rules.version,
                detail={"occurrence": key.rsplit("|", 1)[1], "headline": headline,
                        "to": p["to"], "also_told": []})
            session.add(notification)
            session.flush()
            session.add(Delivery(notification_id=notification.id or 0, channel=channel,
                                 dedupe_key=f"{key}|{channel}", state="pending",
                                 next_attempt_at=now))
            emails.append(str(to.email))
    return emails


def relay_url(port: int, mode: str) -> str:
    """The channels file's relay: plain SMTP, or STARTTLS without verifying the loopback
    certificate (qip_flow trusts the system store; the test CA is not in it)."""
    if mode == "starttls":
        return f"mailtos://127.0.0.1:{port}?from={SENDER}&mode=starttls&verify=no"
    return f"mailto://127.0.0.1:{port}?from={SENDER}"


def prepared(folder: Path, port: int, mode: str, count: int) -> tuple[Any, list[str]]:
    """A runtime on a fresh database with ``count`` queued emails, and their addresses."""
    from qip_flow import SHIPPED_CONFIG
    from qip_flow.clock import Clock
    from qip_flow.runtime import Runtime
    from qip_flow.services import loading
    from qip_flow.store.db import Database

    channels = folder / "channels.yaml"
    channels.write_text(f"version: 1\nurls:\n  - {relay_url(port, mode)}:\n"
                        "      - tag: email\n", encoding="utf-8")
    db = Database(f"sqlite:///{folder / 'qip.db'}")
    db.init(simulation=True)
    rt = Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG, channels_file=str(channels))
    rt.clock.set("2026-01-15")
    examples = SHIPPED_CONFIG / "examples"
    loading.load_files(rt, [examples / "organisation.yaml", examples / "plans"], actor="bench")
    rt.clock.set(NOW)
    expected = queue(rt, count)
    rt.channels  # noqa: B018 — read the channels file before the clock starts
    return rt, expected


def qip_child(port: int, mode: str, count: int, profile_to: Path | None) -> dict[str, Any]:
    from sqlmodel import func, select

    from qip_flow.services import notifications
    from qip_flow.store.models import Delivery

    with tempfile.TemporaryDirectory() as name:
        rt, expected = prepared(Path(name), port, mode, count)

        def send() -> Any:
            return notifications.dispatch(rt, worker="bench")

        if profile_to is not None:
            import cProfile

            profiler = cProfile.Profile()
            timed = measure(lambda: profiler.runcall(send))
            profiler.dump_stats(str(profile_to))
        else:
            timed = measure(send)
        with rt.db.read() as session:
            states = dict(session.exec(select(Delivery.state, func.count())
                                       .group_by(Delivery.state)).all())
        rt.db.dispose()
    summary = timed.value
    return {"seconds": timed.seconds, "peak_mb": timed.peak_mb, "sent": summary.sent,
            "failed": summary.failed, "retried": summary.retried, "errors": summary.errors[:3],
            "states": states, "expected": expected}


def floor_child(port: int, mode: str, count: int, ca_file: str,
                built: bool) -> dict[str, Any]:
    """Plain smtplib on one connection: the same messages, read before the timer, each built
    in the timer with the standard library's classic MIME classes — or, ``built``, flattened
    to bytes before the timer too, so that only the SMTP conversation is timed."""
    import smtplib
    import sqlite3
    from email.header import Header
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText
    from email.utils import formatdate, make_msgid

    with tempfile.TemporaryDirectory() as name:
        rt, expected = prepared(Path(name), port, mode, count)
        rt.db.dispose()
        with sqlite3.connect(Path(name) / "qip.db") as conn:
            rows = conn.execute(
                "select p.email, n.subject, n.body_text, n.body_html, n.rule_id, n.entity_id, "
                "n.kind from delivery d join notification n on n.id = d.notification_id "
                "join person p on p.id = n.recipient_id order by d.id").fetchall()

    def message(to: str, subject: str, text: str, html: str, rule: str, about: str,
                kind: str) -> MIMEMultipart:
        # the classic MIME classes: the cheapest correct multipart the library builds
        out = MIMEMultipart("alternative")
        out["From"] = f"qip_flow <{SENDER}>"
        out["To"] = to
        out["Subject"] = Header(subject, "utf-8")
        out["Date"] = formatdate(localtime=False)
        out["Message-ID"] = make_msgid(domain="riverside-care.example")
        out["X-QIP-Rule"], out["X-QIP-About"], out["X-QIP-Kind"] = rule, about, kind
        out.attach(MIMEText(text, "plain", "utf-8"))
        out.attach(MIMEText(html, "html", "utf-8"))
        return out

    flat = [(row[0], message(*row).as_bytes().replace(b"\n", b"\r\n")) for row in rows] \
        if built else []

    def send() -> int:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
        if mode == "starttls":
            context = ssl.create_default_context()  # the system store, once
            context.load_verify_locations(ca_file)
            smtp.starttls(context=context)
        if built:
            for to, data in flat:
                smtp.sendmail(SENDER, [to], data)
        else:
            for row in rows:
                smtp.send_message(message(*row))
        smtp.quit()
        return len(rows)

    timed = measure(send)
    return {"seconds": timed.seconds, "peak_mb": timed.peak_mb, "sent": timed.value,
            "failed": 0, "retried": 0, "errors": [], "states": {"sent": timed.value},
            "expected": expected}


def child(args: argparse.Namespace) -> None:
    os.environ.pop("SSL_CERT_FILE", None)  # the system CA store, as on a default install
    if args.program in ("floor", "transport"):
        out = floor_child(args.port, args.mode, args.messages, args.ca_file,
                          built=args.program == "transport")
    else:
        out = qip_child(args.port, args.mode, args.messages, args.profile_to)
    print(json.dumps(out))


# --- the benchmark ---------------------------------------------------------------------------


def profile_shares(path: Path) -> list[str]:
    """Where a dispatch spent its time (cProfile, cumulative), as lines for the notes."""
    import pstats

    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    wanted = {"_send": "sending (smtplib, incl. waiting for the server)",
              "build": "building the message (qip_flow.notify.mail.build)",
              "_start": "starting tries (read + INSERT, per step)",
              "_finish": "recording outcomes (bulk UPDATEs, per step)",
              "_claim_deliveries": "claiming batches", "route": "routing",
              "commit": "commits"}
    found: dict[str, float] = {}
    for (filename, _line, func), row in stats.stats.items():  # type: ignore[attr-defined]
        if func in wanted and ("qip_flow" in filename or "sqlalchemy/orm/session" in filename):
            found[func] = max(found.get(func, 0.0), row[3])
    return [f"{wanted[f]}: {found[f] / total:.0%}" for f in wanted if f in found]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500,
                        help="emails per run (default 500)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds; the table gives the median (default 3)")
    parser.add_argument("--baseline", type=Path,
                        help="also time qip_flow's dispatch from this checkout (e.g. main)")
    parser.add_argument("--profile", action="store_true",
                        help="profile one more qip_flow run per mode (cProfile) and print it")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--program", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return {}

    n = args.messages
    programs = ["transport", "floor", "qip_flow"] + (["baseline"] if args.baseline else [])
    labels = {"transport": "floor: smtplib on one connection, messages built before the timer",
              "floor": "floor: smtplib on one connection, building each message",
              "qip_flow": "qip_flow dispatch (outbox in SQLite)",
              "baseline": f"qip_flow dispatch from {args.baseline}"}
    rates: dict[tuple[str, str], list[float]] = {}
    connections: dict[tuple[str, str], int] = {}
    last: dict[str, dict[str, Any]] = {}  # program/mode → the last round's outcome
    profiles: dict[str, list[str]] = {}
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        server = SmtpServer(folder).start()
        try:
            for _ in range(args.rounds):
                for mode in MODES:
                    for program in programs:
                        run_env = dict(env)  # baseline: the other checkout's qip_flow
                        if program == "baseline":
                            run_env["PYTHONPATH"] = str(args.baseline.resolve())
                        result = run_child(
                            [str(Path(__file__).resolve()), "--child", "--program",
                             "qip_flow" if program == "baseline" else program, "--mode", mode,
                             "--port", str(server.port), "--messages", str(n),
                             "--ca-file", str(server.ca_file)], env=run_env)
                        received, opened = server.take()
                        check(program, mode, n, result, received)
                        rates.setdefault((program, mode), []).append(n / result["seconds"])
                        connections[(program, mode)] = opened
                        last[f"{program}/{mode}"] = {
                            "sent": result["sent"], "received": len(received),
                            "states": result["states"], "connections": opened}
            if args.profile:
                for mode in MODES:
                    path = folder / f"{mode}.prof"
                    run_child([str(Path(__file__).resolve()), "--child", "--program", "qip_flow",
                               "--mode", mode, "--port", str(server.port), "--messages", str(n),
                               "--profile-to", str(path)], env=env)
                    server.take()
                    profiles[mode] = profile_shares(path)
                    import pstats

                    print(f"### cProfile, qip_flow dispatch, {mode}")
                    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(30)
        finally:
            server.stop()

    rows: list[list[Any]] = []
    for mode in MODES:
        floor = statistics.median(rates[("transport", mode)])
        for program in programs:
            rate = statistics.median(rates[(program, mode)])
            rows.append([labels[program], mode, n, connections[(program, mode)], rate,
                         rate / floor, "" if program in ("transport", "floor") else
                         ("yes" if rate >= TARGET else "no")])
    notes = [f"Each row: the median of {args.rounds} interleaved runs of {n:,} emails, each in "
             "a fresh process with SSL_CERT_FILE unset (the system CA store); the aiosmtpd "
             "server on 127.0.0.1 received every message, to the right recipient, and every "
             "qip_flow delivery was recorded as sent. 'connections' is what the server counted "
             "in the last round. STARTTLS: qip_flow with `verify=no` (the loopback CA is not in "
             "the system store), the floor verifying against the system store plus that CA; "
             "both build one TLS context.",
             f"Load average when the run ended: {os.getloadavg()[0]:.2f}, "
             f"{os.getloadavg()[1]:.2f}, {os.getloadavg()[2]:.2f} (2 cores shared).",
             *(f"Profile ({mode}, cProfile, share of dispatch time): " + "; ".join(shares)
               for mode, shares in profiles.items()),
             f"Target — at least {TARGET:.0f} emails/s with the system CA store: "
             + ", ".join(f"{mode} " + ("met" if statistics.median(rates[("qip_flow", mode)])
                                      >= TARGET else "MISSED") for mode in MODES) + "."]
    table("dispatch", "Dispatch: emails per second to SMTP on loopback",
          ["program", "SMTP", "messages", "connections", "messages/s", "× transport floor",
           f"≥ {TARGET:.0f}/s"], rows, notes)
    return {"messages": n, "results": last,
            "rates": {f"{p}/{m}": r for (p, m), r in rates.items()}}


def check(program: str, mode: str, n: int, result: dict[str, Any], received: list[str]) -> None:
    """Every message sent, recorded as sent, and received by the right person."""
    where = f"{program} ({mode})"
    if result["sent"] != n or result["states"] != {"sent": n}:
        raise RuntimeError(f"{where}: sent {result['sent']} of {n} (deliveries "
                           f"{result['states']}); {result['errors']}")
    if Counter(received) != Counter(result["expected"]):
        raise RuntimeError(f"{where}: the SMTP server received {len(received)} messages; "
                           f"{n} were sent, to other recipients")


if __name__ == "__main__":
    main()
