"""Messages per second from qip_flow's outbox to an SMTP server on loopback.

A fresh SQLite database in a temporary folder gets the shipped examples (organisation and four
plans) and N queued notifications with one pending email delivery each, written as the tick
writes them: a reminder or escalation rule of rules/reminders.yaml about one of the examples'
actions, the message rendered from qip_flow's templates (text and HTML), to the action's owner
(reminders) or their line manager (every fifth, an escalation). Then qip_flow's own
``notifications.dispatch`` — what ``qip dispatch`` runs: claim a batch, write each try before
the send, send through Apprise, write the outcome — is timed until the outbox is empty. An
aiosmtpd server on 127.0.0.1 (a free port) receives the mail; every message must arrive, to
the right person, and every delivery must be recorded as sent.

Apprise builds a default SSL context for every email, even over plain SMTP, and OpenSSL loads
the whole system CA store into it each time unless ``SSL_CERT_FILE`` names a smaller bundle. So
the run is made twice, each in a fresh process and database: with ``SSL_CERT_FILE`` unset (the
system store, as on a default install) and set to a one-certificate bundle. The SMTP server
runs in this process, the dispatching worker in a child process, as a relay and a worker would.
Target (issue 5): at least 50 emails per second.

    python bench/dispatch.py [--messages 500] [--profile]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import socket
import ssl
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

TARGET = 50.0  # emails per second
SENDER = "qip@riverside-care.example"
NOW = "2026-03-02T10:00"  # a Monday morning in London: outside every channel's quiet hours
PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.S)


# --- the SMTP server (this process) ----------------------------------------------------------


class SmtpServer:
    """aiosmtpd on 127.0.0.1, counting what arrives and for whom."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self.recipients: list[str] = []
        self._lock = threading.Condition()
        server = self

        class Handler:
            async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
                with server._lock:
                    server.recipients.extend(envelope.rcpt_tos)
                    server._lock.notify_all()
                return "250 Message accepted for delivery"

        with socket.socket() as probe:  # a free port: aiosmtpd's own start-up check needs one
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def take(self) -> list[str]:
        with self._lock:
            got, self.recipients = self.recipients, []
        return got

    def stop(self) -> None:
        self._controller.stop()


def small_ca_bundle(folder: Path) -> Path:
    """One certificate from the system store: a valid bundle that costs almost nothing to load."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            first = PEM.search(Path(candidate).read_text(encoding="ascii", errors="replace"))
            if first:
                break
    else:
        import certifi  # a dependency of requests, which Apprise uses

        first = PEM.search(Path(certifi.where()).read_text(encoding="ascii"))
    assert first is not None, "no CA certificate found to make a small bundle from"
    path = folder / "one-ca.pem"
    path.write_text(first.group(0), encoding="ascii")
    return path


# --- the worker (a child process) -----------------------------------------------------------


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


def child(port: int, count: int, ca: str, profile_to: Path | None) -> None:
    if ca == "system":
        os.environ.pop("SSL_CERT_FILE", None)
    else:
        os.environ["SSL_CERT_FILE"] = ca

    from sqlmodel import func, select

    from qip_flow import SHIPPED_CONFIG
    from qip_flow.clock import Clock
    from qip_flow.runtime import Runtime
    from qip_flow.services import loading, notifications
    from qip_flow.store.db import Database
    from qip_flow.store.models import Delivery

    with tempfile.TemporaryDirectory() as folder:
        channels = Path(folder) / "channels.yaml"
        channels.write_text(f"version: 1\nurls:\n  - mailto://127.0.0.1:{port}?from={SENDER}:\n"
                            "      - tag: email\n", encoding="utf-8")
        db = Database(f"sqlite:///{Path(folder) / 'qip.db'}")
        db.init(simulation=True)
        rt = Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG, channels_file=str(channels))
        rt.clock.set("2026-01-15")
        examples = SHIPPED_CONFIG / "examples"
        loading.load_files(rt, [examples / "organisation.yaml", examples / "plans"], actor="bench")
        rt.clock.set(NOW)
        expected = queue(rt, count)
        rt.channels  # noqa: B018 — read the channels file before the clock starts

        def send() -> Any:
            return notifications.dispatch(rt, worker="bench")

        if profile_to is not None:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            with profiler:
                timed = measure(send)
            profile_to.write_text(profiler.output_text(unicode=True, color=False),
                                  encoding="utf-8")
        else:
            timed = measure(send)
        with rt.db.read() as session:
            states = dict(session.exec(select(Delivery.state, func.count())
                                       .group_by(Delivery.state)).all())
        db.dispose()
    summary = timed.value
    print(json.dumps({"seconds": timed.seconds, "peak_mb": timed.peak_mb, "sent": summary.sent,
                      "failed": summary.failed, "retried": summary.retried,
                      "errors": summary.errors[:3], "states": states, "expected": expected}))


# --- the benchmark ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500,
                        help="notifications to send (default 500)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a pyinstrument profile of each dispatch")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca", help=argparse.SUPPRESS)
    parser.add_argument("--profile-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.port, args.messages, args.ca, args.profile_to)
        return {}

    n = args.messages
    rows: list[list[Any]] = []
    results: dict[str, dict[str, Any]] = {}
    server = SmtpServer().start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            bundle = small_ca_bundle(Path(folder))
            variants = [("SSL_CERT_FILE unset (system CA store per message)", "system"),
                        ("SSL_CERT_FILE = a one-certificate bundle", str(bundle))]
            for label, ca in variants:
                profile = Path(folder) / "profile.txt"
                extra = ["--profile-to", str(profile)] if args.profile else []
                result = run_child([str(Path(__file__).resolve()), "--child", "--port",
                                    str(server.port), "--messages", str(n), "--ca", ca, *extra])
                received = server.take()
                if result["sent"] != n or result["states"] != {"sent": n}:
                    raise RuntimeError(f"{label}: dispatch sent {result['sent']} of {n} "
                                       f"(deliveries {result['states']}); {result['errors']}")
                if Counter(received) != Counter(result["expected"]):
                    raise RuntimeError(f"{label}: the SMTP server received {len(received)} "
                                       f"messages; {n} were sent, to other recipients")
                rate = n / result["seconds"]
                rows.append([label, n, result["seconds"], rate,
                             "yes" if rate >= TARGET else "no"])
                results[ca if ca == "system" else "bundle"] = {**result, "received": len(received),
                                                               "rate": rate}
                if args.profile:
                    print(f"### profile: {label}\n\n{profile.read_text(encoding='utf-8')}")
    finally:
        server.stop()
    system, small = results["system"]["rate"], results["bundle"]["rate"]
    notes = [f"Each row: a fresh SQLite database with the examples and {n:,} notifications "
             "queued (rendered by qip_flow's templates, one email delivery each); `dispatch()` "
             "timed until the outbox was empty; the aiosmtpd server on 127.0.0.1 received every message, "
             "to the right recipient, and every delivery was recorded as sent.",
             f"The one-certificate bundle makes dispatch {small / system:.1f}× faster: Apprise "
             "creates an SSL context for every email, even over plain SMTP, and OpenSSL then "
             "reads the CA bundle named by SSL_CERT_FILE, or the whole system store "
             f"({ssl.get_default_verify_paths().cafile}).",
             f"Target — at least {TARGET:.0f} emails/s: "
             + ("met with the system CA store" if system >= TARGET else
                "MISSED with the system CA store")
             + (", met with a small bundle." if small >= TARGET else
                ", MISSED even with a small bundle.")]
    table("dispatch", "Dispatch: emails per second to SMTP on loopback",
          ["SSL_CERT_FILE", "messages", "seconds", "messages/s", f"≥ {TARGET:.0f}/s"], rows,
          notes)
    return {"messages": n, "results": results}


if __name__ == "__main__":
    main()
