"""Hostile input in every text a message shows (issue #12): HTML, script, Jinja, Markdown and
Adaptive Card syntax in a person's name, a service's name, a plan's title, an action's
description, a finding, a progress note and a reason for a new date stay inert in the emails
(the real SMTP sink) and in the Teams cards (the real HTTPS receiver): in the HTML part they are
escaped text, in the text part they read as typed, in a card they are escaped Markdown; no tag,
link, template or card function of theirs survives, and every link in a message is our own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from notify_servers import (
    MEDICATION,
    ORGANISATION,
    PLANS,
    SmtpServer,
    WebhookReceiver,
    make_runtime,
    morning,
    smtp_server,
    trust_loopback,
    webhook_receiver,
    write_channels,
)

from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, loading, notifications
from qip_flow.store.db import Database
from qip_flow.store.models import DueRequest

pytestmark = pytest.mark.filterwarnings(
    "ignore:Unverified HTTPS request:urllib3.exceptions.InsecureRequestWarning")

BASE_URL = "https://qip.riverside-care.example"
A2 = "QIP-2026-014/A2"
#: what a probe types: a tag, a script, Jinja (7×191 = 1337 if it ever ran), Markdown emphasis
#: and a link, a Teams mention, an Adaptive Card date function and a template expression
HOSTILE = ('<img src=x onerror=alert(1)><script>alert(1)</script> {{ 7*191 }} {% if 1 %}x'
           '{% endif %} **bold** [click](http://evil.example) <at>CEO</at> '
           '{{DATE(2017-02-14T06:08:39Z)}} ${f()}')
ALLOWED_TAGS = {"html", "head", "meta", "title", "body", "div", "p", "h1", "h2", "table", "tr",
                "td", "th", "caption", "a", "span", "strong", "ul", "li", "br"}


def quoted(text: str) -> str:
    return json.dumps(text)  # a YAML double-quoted scalar


def hostile_files(folder: Path) -> list[Path]:
    """The example organisation and the medication plan with hostile text everywhere a
    message quotes it."""
    org = ORGANISATION.read_text(encoding="utf-8")
    org = org.replace("    name: Adam Nowak\n", f"    name: {quoted('Adam ' + HOSTILE)}\n")
    org = org.replace("    name: Maple House\n", f"    name: {quoted('Maple ' + HOSTILE)}\n")
    plan = MEDICATION.read_text(encoding="utf-8")
    for old in ("title: Medication management after CQC inspection at Maple House",
                "    description: Retrain the night team and bank staff group (14 named staff) "
                "in medicines administration",
                "    description: Staff on night shifts had not completed medicines refresher "
                "training"):
        assert old in plan, old
        head = old.split(": ", 1)[0]
        plan = plan.replace(old, f"{head}: {quoted(old.split(': ', 1)[1][:20] + ' ' + HOSTILE)}")
    (folder / "organisation.yaml").write_text(org, encoding="utf-8")
    (folder / "plan.yaml").write_text(plan, encoding="utf-8")
    others = [p for p in sorted(PLANS.glob("*.yaml")) if p.name != MEDICATION.name]
    return [folder / "organisation.yaml", folder / "plan.yaml", *others]


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.hrefs: list[str] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "href":
                self.hrefs.append(value or "")
            if name.startswith("on"):
                self.handlers.append(name)


def card_texts(payload: dict[str, Any]) -> list[str]:
    """Every text a card shows: text blocks, fact titles and values, button titles."""
    out: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("text", "title", "value"):
                if isinstance(node.get(key), str):
                    out.append(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(payload)
    return out


@pytest.fixture(scope="module")
def played(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Any], list[Any]]]:
    """Mornings of 12, 20 and 23 March (a Monday: the digest) on a SQLite file, mail through
    the relay, senior people also in Teams; the owner wrote a hostile progress note before the
    due date and asked for a new date with a hostile reason."""
    folder = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp, smtp_server() as smtp, webhook_receiver() as teams:
        trust_loopback(mp, folder)
        mp.setenv("QIP_BASE_URL", BASE_URL)
        mp.setenv("QIP_SECRET_KEY", "h" * 40)
        db = Database(f"sqlite:///{folder / 'qip.db'}")
        db.init(simulation=True)
        rt = make_runtime(db, write_channels(folder / "channels.yaml", [
            (smtp.url(), "email"), (teams.url("wfhostile01", "sighostile1"), "role:senior")]))
        played_days(rt, folder, smtp, teams)
        db.dispose()
        yield smtp.messages, [h for h in teams.hooks if h.delivered]


def played_days(rt: Runtime, folder: Path, smtp: SmtpServer, teams: WebhookReceiver) -> None:
    rt.clock.set("2026-01-15")
    loading.load_files(rt, hostile_files(folder), actor="test")
    rt.clock.set("2026-01-22T10:00")
    lifecycle.sign_off(rt, "QIP-2026-014", "approval", by="dadeyemi")
    lifecycle.fire_event(rt, "QIP-2026-014", "start", by="jpatel")
    rt.clock.set("2026-03-02T10:00")
    lifecycle.fire_event(rt, A2, "update", by="anowak", note="Note " + HOSTILE)
    with rt.db.write() as session:
        session.add(DueRequest(action_id=A2, requested_by_id="anowak", new_due=date(2026, 4, 24),
                               reason="Reason " + HOSTILE,
                               at=datetime(2026, 3, 3, 10, tzinfo=UTC)))
    for day in (date(2026, 3, 12), date(2026, 3, 20), date(2026, 3, 23)):
        rt.clock.set(morning(day))
        notifications.tick(rt)
        notifications.dispatch(rt)


def test_every_email_shows_hostile_text_as_text(played: tuple[list[Any], list[Any]]) -> None:
    mails, _ = played
    kinds = {m.kind for m in mails}
    assert {"reminder", "escalation", "digest"} <= kinds
    quoting: set[str] = set()
    for mail in mails:
        tags = Tags()
        tags.feed(mail.html)
        assert tags.tags <= ALLOWED_TAGS, f"{mail.subject}: {tags.tags - ALLOWED_TAGS}"
        assert tags.handlers == []
        assert all(h.startswith(BASE_URL + "/") for h in tags.hrefs), tags.hrefs
        for part in (mail.subject, mail.text, mail.html):
            assert "1337" not in part  # Jinja never ran on people's text
            assert "https://link.qip-flow.invalid" not in part  # the link slot was filled
        if HOSTILE in mail.text:  # the text part shows what was typed …
            quoting.add(mail.kind)
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail.html  # … the HTML, as text
            assert "{{ 7*191 }}" in mail.html and "**bold**" in mail.html
            assert "[click](http://evil.example)" in mail.html
    assert quoting == {"reminder", "escalation", "digest"}


def test_the_escalation_quotes_the_hostile_note_and_reason_inertly(
        played: tuple[list[Any], list[Any]]) -> None:
    mails, _ = played
    [escalation] = [m for m in mails if m.kind == "escalation" and m.about == A2
                    and m.rule == "escalate.line-manager"]
    for words in ("Note " + HOSTILE, "Reason " + HOSTILE, "Adam " + HOSTILE):
        assert words in escalation.text
    assert "Note &lt;img src=x onerror=alert(1)&gt;" in escalation.html
    [digest] = [m for m in mails if m.kind == "digest" and m.to.startswith("daniel")]
    assert "Reason " + HOSTILE in digest.text  # the new date waiting for his approval
    assert "&lt;script&gt;" in digest.html


def test_every_teams_card_shows_hostile_text_as_text(
        played: tuple[list[Any], list[Any]]) -> None:
    _, hooks = played
    assert {h.card["type"] for h in hooks} == {"AdaptiveCard"} and len(hooks) >= 2
    for hook in hooks:
        texts = card_texts(hook.payload)
        joined = "\n".join(texts)
        assert "{{" not in joined and "${" not in joined and "1337" not in joined
        for text in texts:
            for special in ("<", "*", "[", "]", "_", "`", "|", "~"):
                at = [i for i, c in enumerate(text) if c == special]
                assert all(i > 0 and text[i - 1] == "\\" for i in at), (special, text)
        for button in hook.buttons:
            assert button["url"].startswith(BASE_URL + "/")
    assert any(r"\<script\>" in "\n".join(card_texts(h.payload)) for h in hooks)
