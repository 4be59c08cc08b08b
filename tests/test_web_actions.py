"""The action page, My work and evidence files, in process (FastAPI's test client over a real
SQLite file; the browser journey against a real server is in test_web_action_browser.py).

Each test gets its own copy of one database made for the module: the examples loaded and the
medication plan QIP-2026-014 approved and started on 22 January 2026; its actions are A1 (Jaya
Patel, due 13 February), A2 (Adam Nowak, due 13 March) and A3 (Megan Jones, due 27 March).
Jaya Patel is the plan's accountable owner and Megan's line manager; Daniel Adeyemi is its
sponsor and Adam's line manager."""

from __future__ import annotations

import io
import re
import shutil
import sqlite3
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import snapshot
from fastapi.testclient import TestClient
from notify_servers import approve_and_start, load_examples
from sqlmodel import select

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.runtime import Runtime
from qip_flow.services import identity, notifications
from qip_flow.store import evidence_files
from qip_flow.store.db import Database
from qip_flow.store.keys import ensure_key
from qip_flow.store.models import (
    Acknowledgement,
    Action,
    AuditEvent,
    Evidence,
    Notification,
    Plan,
    WebSession,
)
from qip_flow.web.app import create_app
from qip_flow.web.config import WebSettings

PLAN = "QIP-2026-014"
A1, A2, A3 = f"{PLAN}/A1", f"{PLAN}/A2", f"{PLAN}/A3"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>{{ 7*7 }}{% if 1 %}jinja{% endif %}"
SETTINGS_VARIABLES = ("QIP_EVIDENCE_DIR", "QIP_UPLOAD_LIMIT", "QIP_SETTINGS", "QIP_BASE_URL",
                      "QIP_SECRET_KEY", "QIP_KEY_FILE", "QIP_NOW")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    db = Database(f"sqlite:///{folder / 'qip.db'}")
    db.init(simulation=True)
    rt = Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG)
    load_examples(rt)
    with pytest.MonkeyPatch.context() as env:  # beside the database, whatever leaked before
        env.delenv("QIP_SECRET_KEY", raising=False)
        env.delenv("QIP_KEY_FILE", raising=False)
        ensure_key(db)
    approve_and_start(rt)
    db.dispose()
    return folder


@dataclass
class Site:
    rt: Runtime
    folder: Path
    app: Any

    def client(self, person: str, *, scope: str | None = None, method: str = "dev") -> TestClient:
        client = TestClient(self.app, follow_redirects=False)
        token = identity.open_session(self.rt, person, "deep-link" if scope else method,
                                      scope=scope)
        client.cookies.set("qip_session", token)
        return client

    @property
    def evidence(self) -> Path:
        return self.folder / "evidence"

    def stored(self) -> list[Path]:
        return sorted(p for p in self.evidence.rglob("*") if p.is_file()) \
            if self.evidence.exists() else []

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        return snapshot(self.rt.db)

    def rows(self, model: Any) -> list[Any]:
        with self.rt.db.read() as session:
            return list(session.exec(select(model)).all())

    def audit(self, entity_id: str | None = None) -> list[AuditEvent]:
        return [e for e in sorted(self.rows(AuditEvent), key=lambda e: e.seq or 0)
                if entity_id is None or e.entity_id == entity_id]


def make_site(template: Path, folder: Path, monkeypatch: pytest.MonkeyPatch,
              **env: str) -> Site:
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(folder)  # no qip.toml of the repository's is read
    shutil.copy(template / "qip.db", folder / "qip.db")
    shutil.copy(template / "qip.key", folder / "qip.key")
    db = Database(f"sqlite:///{folder / 'qip.db'}")
    rt = Runtime(db=db, clock=Clock(), config_dir=SHIPPED_CONFIG)
    rt.clock.set("2026-03-20T10:00")  # a Friday
    return Site(rt, folder, create_app(rt, WebSettings(base_url="http://testserver")))


@pytest.fixture
def site(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Site]:
    made = make_site(template, tmp_path, monkeypatch)
    yield made
    made.rt.db.dispose()


def token(page: Any) -> str:
    found = CSRF.search(page.text)
    assert found, "the page has no form"
    return found.group(1)


def action_path(action_id: str) -> str:
    return f"/actions/{action_id}"


def send(client: TestClient, action_id: str, form: str, data: dict[str, str] | None = None,
         files: dict[str, Any] | None = None) -> Any:
    page = client.get(action_path(action_id))
    return client.post(f"{action_path(action_id)}/{form}", files=files,
                       data={"csrf_token": token(page), **(data or {})})


def pdf(name: str = "audit.pdf") -> dict[str, Any]:
    return {"file": (name, PDF, "application/pdf")}


def main(page: Any) -> str:
    return page.text.split('id="maincontent"', 1)[1].split("</main>", 1)[0]


# --- My work ---------------------------------------------------------------------------------


def test_my_work_lists_my_actions_overdue_first_with_links(site: Site) -> None:
    jaya = site.client("jpatel")
    send(site.client("mjones"), A3, "complete", {"description": "Competency records"}, pdf())
    page = jaya.get("/")
    assert page.status_code == 200
    text = main(page)
    # her own action A1 is 25 working days overdue (13 February to 20 March)
    assert f'href="/actions/{A1}"' in text and "25 working days overdue" in text
    assert "nhsuk-tag--red" in text.split(A1, 1)[1].split("</tr>", 1)[0]
    # Megan's completed A3 waits for Jaya (her line manager) to verify it
    verifications = text.split('id="verifications"', 1)[1].split("</ul>", 1)[0]
    assert f'href="/actions/{A3}#verify"' in verifications and A1 not in verifications
    assert "Signed in as <strong>Jaya Patel</strong>" in text and "Today is 20 March 2026" in text


def test_my_work_shows_escalations_sent_to_me_and_their_acknowledgement(site: Site) -> None:
    notifications.tick(site.rt, worker="test")  # A2 is 5 working days overdue on 20 March
    daniel = site.client("dadeyemi")
    text = main(daniel.get("/"))
    rows = text.split('id="escalations"', 1)[1].split("</table>", 1)[0]
    assert f'href="/actions/{A2}"' in rows and "Escalation" in rows and "Not yet" in rows
    assert send(daniel, A2, "acknowledge").status_code == 303
    rows = main(daniel.get("/")).split('id="escalations"', 1)[1].split("</table>", 1)[0]
    about_a2 = [r for r in rows.split("</tr>") if A2 in r]
    # overdue, and silent for 30 days: one message (the ladder sends one rung per person, action
    # and day), acknowledged
    assert len(about_a2) == 1
    for row in about_a2:
        assert "20 March 2026; the next escalation waits until 27 March 2026" in row


def test_a_link_session_sees_its_one_item_on_my_work(site: Site) -> None:
    adam = site.client("anowak", scope=A2)
    text = main(adam.get("/"))
    assert f"{A2} only" in text and f'href="/actions/{A2}"' in text
    assert A1 not in text and "Your actions" not in text


# --- the action page ---------------------------------------------------------------------------


def test_the_action_page_shows_what_why_due_revisions_notes_and_evidence(site: Site) -> None:
    adam = site.client("anowak")
    assert send(adam, A2, "progress", {"note": "9 of 14 trained"}).status_code == 303
    assert send(adam, A2, "evidence", {"description": "Training register"},
                pdf("register.pdf")).status_code == 303
    assert send(adam, A2, "new-date", {"day": "10", "month": "4", "year": "2026",
                                       "reason": "Two bank staff on leave"}).status_code == 303
    page = site.client("dadeyemi").get(action_path(A2))
    text = main(page)
    assert "Retrain the night team" in text  # what
    assert "Staff on night shifts had not completed medicines refresher training" in text  # why
    assert "Training matrix did not flag lapsed refreshers" in text  # root cause
    assert "Adam Nowak" in text and "13 March 2026" in text  # owner and due date
    assert "9 of 14 trained" in text
    evidence_id = site.rows(Evidence)[-1].id
    assert f'href="/evidence/{evidence_id}"' in text and "PDF" in text and "register.pdf" in text
    assert "asked on 20 March 2026 for <strong>10 April 2026</strong>" in text
    assert 'id="decide"' in text  # Daniel, Adam's line manager, may decide it


def test_the_owner_records_progress_adds_evidence_and_completes_recorded_as_the_web(
        site: Site) -> None:
    megan = site.client("mjones", method="email-link")
    answer = send(megan, A3, "progress", {"note": "Four of six reassessed"})
    assert (answer.status_code, answer.headers["location"]) == \
        (303, f"/actions/{A3}?done=progress")
    assert "Your progress note is recorded." in megan.get(answer.headers["location"]).text
    answer = send(megan, A3, "complete", {"description": "Competency records, all six",
                                          "note": "All six done"}, pdf("competency.pdf"))
    assert answer.headers["location"] == f"/actions/{A3}?done=complete"
    events = site.audit(A3)
    assert [e.what for e in events[-3:]] == ["start", "update", "complete"]
    for event in events[-3:]:
        assert event.actor == "mjones"
        assert event.detail["via"] == {"door": "web", "signin": "email-link"}
    row = site.rows(Evidence)[-1]
    assert (row.action_id, row.media_type, row.filename, row.size) == \
        (A3, "application/pdf", "competency.pdf", len(PDF))
    assert events[-1].detail["files"] == [{"sha256": row.sha256, "size": len(PDF),
                                           "media_type": "application/pdf",
                                           "filename": "competency.pdf"}]
    stored = evidence_files.path_of(site.evidence, row.sha256 or "")
    assert stored.read_bytes() == PDF and stored.parent.name == (row.sha256 or "")[:2]
    assert not any((site.evidence / ".incoming").iterdir())


def test_an_invalid_form_is_shown_again_with_each_reason_and_nothing_changes(site: Site) -> None:
    adam = site.client("anowak")
    before, files = site.tables(), site.stored()
    cases = [
        ("progress", {"note": "   "}, {"progress-note": "Enter what has been done"}),
        ("new-date", {"day": "31", "month": "2", "year": "2026", "reason": "Leave <b>x</b>"},
         {"new-date-day": "Enter a real date"}),
        ("new-date", {"day": "", "month": "", "year": "", "reason": ""},
         {"new-date-day": "Enter the new due date", "new-date-reason": "Say why"}),
        ("new-date", {"day": "1", "month": "1", "year": "2026", "reason": "Too late"},
         {"new-date-day": "is in the past"}),
        ("evidence", {"description": ""}, {"evidence-description": "Say what the file shows",
                                           "evidence-file": "Choose the file"}),
    ]
    for form, data, reasons in cases:
        answer = send(adam, A2, form, data)
        assert answer.status_code == 400, (form, data)
        text = main(answer)
        summary = text.split('class="nhsuk-error-summary"', 1)[1].split("</div>\n</div>", 1)[0]
        for field, words in reasons.items():
            assert f'href="#{field}"' in summary and words in summary, (form, field)
            beside = text.split(f'id="{field}-error"', 1)[1].split("</span>\n", 1)[0]
            assert words in beside, (form, field)
        if form == "new-date" and data["reason"]:  # what was typed is kept (and inert)
            assert "Leave &lt;b&gt;x&lt;/b&gt;" in text or "Too late" in text
            assert f'value="{data["day"]}"' in text
    assert site.tables() == before and site.stored() == files


def test_a_guard_refusal_is_shown_beside_the_form(site: Site) -> None:
    """Completing without evidence: the workflow's guard says why; nothing changes."""
    jaya = site.client("jpatel")
    before = site.tables()
    answer = send(jaya, A1, "complete", {"note": "all done"})
    assert answer.status_code == 409
    beside = main(answer).split('id="complete-file-error"', 1)[1].split("</span>\n", 1)[0]
    assert "completing an action needs evidence" in beside
    assert "all done" in main(answer)  # the note typed is kept
    assert site.tables() == before


# --- new dates, verification, reassignment -----------------------------------------------------


def test_a_new_date_is_asked_by_the_owner_and_decided_by_someone_else(site: Site) -> None:
    jaya, ruth = site.client("jpatel"), site.client("rmensah")
    assert send(jaya, A1, "new-date", {"day": "27", "month": "3", "year": "2026",
                                       "reason": "Audit tool replaced"}).status_code == 303
    request_id = re.search(r'/new-date/(\d+)"', ruth.get(action_path(A1)).text).group(1)
    # the owner may not decide her own request, whatever she types
    refused = send(jaya, A1, f"new-date/{request_id}", {"decision": "approve"})
    assert refused.status_code == 403
    assert "Jaya Patel" in main(refused) and "Ruth Mensah (rmensah)" in main(refused)
    assert site.audit()[-1].what == "request refused"
    # the line manager may, and must give a reason to refuse
    blank = send(ruth, A1, f"new-date/{request_id}", {"decision": "refuse", "reason": ""})
    assert blank.status_code == 400 and 'id="decide-reason-error"' in blank.text
    approved = send(ruth, A1, f"new-date/{request_id}", {"decision": "approve"})
    assert approved.headers["location"] == f"/actions/{A1}?done=approved"
    page = main(ruth.get(approved.headers["location"]))
    assert "The new date is approved" in page
    assert "to <strong>27 March 2026</strong> on 20 March 2026, approved by Ruth Mensah" in page
    event = site.audit(A1)[-1]
    assert (event.what, event.actor, event.detail["due"]) == ("revise_due", "rmensah",
                                                              "2026-03-27")
    # decided once
    again = send(ruth, A1, f"new-date/{request_id}", {"decision": "refuse", "reason": "No"})
    assert again.status_code in (403, 409)


def test_a_new_date_refused_with_its_reason(site: Site) -> None:
    adam, daniel = site.client("anowak"), site.client("dadeyemi")
    send(adam, A2, "new-date", {"day": "30", "month": "4", "year": "2026", "reason": "Leave"})
    request_id = re.search(r'/new-date/(\d+)"', daniel.get(action_path(A2)).text).group(1)
    answer = send(daniel, A2, f"new-date/{request_id}", {"decision": "refuse",
                                                         "reason": "Book the agency trainer"})
    assert answer.headers["location"] == f"/actions/{A2}?done=refused"
    page = main(adam.get(action_path(A2)))
    assert "Refused by Daniel Adeyemi on 20 March 2026: Book the agency trainer" in page
    assert site.audit(A2)[-1].what == "new date refused"


def test_verify_is_refused_to_whoever_owns_or_completed_the_action(site: Site) -> None:
    jaya, megan, daniel = site.client("jpatel"), site.client("mjones"), site.client("dadeyemi")
    send(jaya, A1, "complete", {"description": "MAR audits"}, pdf())
    before = site.tables()
    refused = send(jaya, A1, "verify")
    assert refused.status_code == 403
    text = main(refused)
    assert "Jaya Patel owns QIP-2026-014/A1 and cannot verify it" in text
    assert "Ruth Mensah (rmensah)" in text and "Daniel Adeyemi (dadeyemi)" in text
    assert 'id="verify"' not in jaya.get(action_path(A1)).text  # never offered
    # Megan completes A3, which then goes to Jaya: Megan still may not verify it
    send(megan, A3, "complete", {"description": "Records"}, pdf("records.pdf"))
    assert send(daniel, A3, "reassign", {"new_owner": "jpatel",
                                         "reason": "Megan moves service"}).status_code == 303
    refused = send(megan, A3, "verify")
    assert refused.status_code == 403 and "completed QIP-2026-014/A3" in main(refused)
    changed = {t for t, rows in site.tables().items() if rows != before[t]}
    assert "action" in changed  # A3 completed and reassigned; A1 untouched:
    assert [a for a in site.tables()["action"] if a[0] == A1] == \
        [a for a in before["action"] if a[0] == A1]
    verified = send(daniel, A1, "verify", {"note": "Checked the audit sheets"})
    assert verified.headers["location"] == f"/actions/{A1}?done=verified"
    assert site.audit(A1)[-1].what == "verify"


def test_a_stale_page_cannot_verify_what_changed_since(site: Site) -> None:
    jaya, daniel = site.client("jpatel"), site.client("dadeyemi")
    send(jaya, A1, "complete", {"description": "MAR audits"}, pdf())
    page = daniel.get(action_path(A1))
    send(site.client("anowak"), A2, "progress", {"note": "meanwhile"})  # the plan moves on
    version = re.search(r'name="version" value="(\d+)"', page.text).group(1)
    answer = daniel.post(f"{action_path(A1)}/verify", data={"csrf_token": token(page),
                                                            "version": version})
    assert answer.status_code == 409 and "since you saw it" in answer.text


def test_reassigning_hands_the_action_to_a_new_owner(site: Site) -> None:
    daniel = site.client("dadeyemi")
    page = daniel.get(action_path(A2))
    assert '<option value="tbrennan">Tom Brennan' in page.text
    blank = send(daniel, A2, "reassign", {"new_owner": "", "reason": ""})
    assert blank.status_code == 400 and 'id="reassign-owner-error"' in blank.text
    nobody = send(daniel, A2, "reassign", {"new_owner": "ghost", "reason": "x"})
    assert nobody.status_code == 400 and "Unknown person &#39;ghost&#39;" in main(nobody)
    moved = send(daniel, A2, "reassign", {"new_owner": "lokafor", "reason": "Adam on leave"})
    assert moved.status_code == 303
    (event,) = [e for e in site.audit(A2) if e.what == "reassigned"]
    assert (event.actor, event.detail["from"], event.detail["to"], event.reason) == \
        ("dadeyemi", "anowak", "lokafor", "Adam on leave")
    assert "Lola Okafor" in main(daniel.get(action_path(A2)))
    # the owner herself may not reassign
    assert send(site.client("lokafor"), A2, "reassign", {"new_owner": "anowak",
                                                          "reason": "x"}).status_code == 403


# --- who may do what ---------------------------------------------------------------------------


def test_approvals_need_a_recent_full_sign_in(site: Site) -> None:
    jaya = site.client("jpatel")
    send(site.client("mjones"), A3, "complete", {"description": "Records"}, pdf())
    page = jaya.get(action_path(A3))
    with site.rt.db.write(gated=False) as session:  # her sign-in was 20 minutes ago
        for row in session.exec(select(WebSession)).all():
            if row.person_id == "jpatel":
                row.full_signin_at = datetime.now(UTC) - timedelta(minutes=20)
    stale = jaya.get(action_path(A3))
    assert "you will be asked to sign in again" in stale.text and 'id="verify"' in stale.text
    answer = jaya.post(f"{action_path(A3)}/verify", data={"csrf_token": token(page)})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/sign-in?next=%2Factions%2F{PLAN}%2FA3%2Fverify&again=1"
    # a link's session never approves, however recent
    link = site.client("jpatel", scope=A3)
    linked = link.get(action_path(A3))
    assert 'id="verify"' not in linked.text
    answer = link.post(f"{action_path(A3)}/verify", data={"csrf_token": token(linked)})
    assert answer.status_code == 303 and "again=1" in answer.headers["location"]
    assert all(a.state != "verified" for a in site.rows(Action))


def test_a_link_session_is_limited_to_its_item(site: Site) -> None:
    adam = site.client("anowak", scope=A2)
    page = adam.get(action_path(A2))
    assert page.status_code == 200 and 'action="/actions/QIP-2026-014/A2/progress"' in page.text
    assert "To mark the action complete, <a href=\"/sign-in?next=" in page.text
    before = site.tables()
    other = adam.get(action_path(A3))
    assert other.status_code == 403 and "this link opens QIP-2026-014/A2 only" in other.text
    for form, data in (("progress", {"note": "x"}), ("complete", {})):
        path = A3 if form == "progress" else A2
        answer = adam.post(f"{action_path(path)}/{form}", data={"csrf_token": token(page), **data})
        assert answer.status_code == 403, form
    assert adam.get(f"/evidence/{1}").status_code in (403, 404)
    after = site.tables()
    assert {t: r for t, r in after.items() if t not in ("auditevent", "audithead")} == \
        {t: r for t, r in before.items() if t not in ("auditevent", "audithead")}
    assert [e.what for e in site.audit()[-3:]] == ["request refused"] * 3
    # what the link allows, it does
    assert send(adam, A2, "progress", {"note": "from the email"}).status_code == 303


def test_a_post_without_its_form_token_is_refused_and_changes_nothing(site: Site) -> None:
    adam = site.client("anowak")
    before = site.tables()
    for data in ({"note": "x"}, {"note": "x", "csrf_token": "forged"}):
        answer = adam.post(f"{action_path(A2)}/progress", data=data)
        assert answer.status_code == 403 and "did not come from qip_flow" in answer.text
    answer = adam.post(f"{action_path(A2)}/evidence", data={"description": "x"}, files=pdf())
    assert answer.status_code == 403
    assert {t: r for t, r in site.tables().items() if t not in ("auditevent", "audithead")} == \
        {t: r for t, r in before.items() if t not in ("auditevent", "audithead")}
    assert site.stored() == []


def test_someone_with_no_part_in_the_plan_sees_nothing(site: Site) -> None:
    send(site.client("anowak"), A2, "evidence", {"description": "Register"}, pdf())
    simran = site.client("skaur")
    assert simran.get(action_path(A2)).status_code == 403
    evidence_id = site.rows(Evidence)[-1].id
    refused = simran.get(f"/evidence/{evidence_id}")
    assert refused.status_code == 403 and "%PDF" not in refused.text
    assert site.client("anowak").get("/evidence/999").status_code == 404
    assert simran.get("/actions/QIP-2026-014/A9").status_code == 404


def test_the_routes_declare_their_policy() -> None:
    from qip_flow.services.policy import Act
    from qip_flow.web.routes import actions, home

    values = {a.value for a in Act} | {"public", "signed-in"}
    for module in (actions, home):
        routes = {(method, route.path) for route in module.router.routes
                  for method in route.methods}  # type: ignore[attr-defined]
        assert routes == set(module.ROUTE_POLICY), module.__name__
        assert set(module.ROUTE_POLICY.values()) <= values


# --- evidence files --------------------------------------------------------------------------


def test_a_stored_file_is_handed_out_as_an_attachment_of_its_content_type(site: Site) -> None:
    adam = site.client("anowak")
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    send(adam, A2, "evidence", {"description": "Photo of the rota"},
         {"file": ("rota.pdf", png, "application/pdf")})  # named .pdf: the content decides
    row = site.rows(Evidence)[-1]
    assert row.media_type == "image/png"
    answer = site.client("dadeyemi").get(f"/evidence/{row.id}")
    assert answer.status_code == 200 and answer.content == png
    assert answer.headers["content-type"] == "image/png"
    assert answer.headers["content-disposition"] == \
        "attachment; filename=\"rota.pdf.png\"; filename*=UTF-8''rota.pdf.png"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in answer.headers["content-security-policy"]
    text = b"Week,Score\n1,78\n2,96\n"
    send(adam, A2, "evidence", {"description": "Scores"},
         {"file": ("<i>scores.html", text, "text/html")})
    row = site.rows(Evidence)[-1]
    answer = adam.get(f"/evidence/{row.id}")
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.headers["content-disposition"].startswith(
        'attachment; filename="i_scores.html.txt"; ')


def test_the_same_content_uploaded_twice_is_kept_once(site: Site) -> None:
    adam = site.client("anowak")
    for name in ("one.pdf", "two.pdf"):
        assert send(adam, A2, "evidence", {"description": name}, pdf(name)).status_code == 303
    first, second = site.rows(Evidence)[-2:]
    assert first.sha256 == second.sha256 and len(site.stored()) == 1


def _office(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        for name, data in members.items():
            package.writestr(name, data)
    return buffer.getvalue()


DOCX = _office({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w:document/>"})
ODS = _office({"mimetype": b"application/vnd.oasis.opendocument.spreadsheet",
               "content.xml": b"<office:document-content/>"})


@pytest.mark.parametrize(("content", "name", "kind"), [
    (PDF, "a.pdf", "application/pdf"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "a.jpg", "image/jpeg"),
    (b"GIF89a" + b"\x00" * 20, "a.gif", "image/gif"),
    (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "a.webp", "image/webp"),
    (DOCX, "a.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    (_office({"[Content_Types].xml": b"x", "xl/workbook.xml": b"x"}), "a.xlsx",
     "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    (_office({"[Content_Types].xml": b"x", "ppt/presentation.xml": b"x"}), "a.pptx",
     "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    (_office({"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"x"}),
     "a.odt", "application/vnd.oasis.opendocument.text"),
    (ODS, "a.ods", "application/vnd.oasis.opendocument.spreadsheet"),
    ("Name,Score\nZoë,96\n".encode(), "a.csv", "text/csv"),
    ("Notes from the audit – all fine\n".encode(), "a.txt", "text/plain"),
    (b"\x7fELF\x02\x01\x01" + b"\x00" * 30, "report.pdf", None),
    (b"MZ\x90\x00" + b"\x00" * 30, "report.docx", None),
    (_office({"evil.sh": b"rm -rf /"}), "report.docx", None),
    (_office({"[Content_Types].xml": b"x", "word/vbaProject.bin": b"x"}), "a.docx", None),
    (_office({"mimetype": b"application/x-evil", "content.xml": b"x"}), "a.odt", None),
    (b"PK\x03\x04 not really a zip", "a.docx", None),
    (b"text with a NUL \x00 inside", "a.txt", None),
    (b"\xc3\x28 invalid utf-8", "a.csv", None),
    (b"", "empty.pdf", None),
])
def test_the_kind_of_a_file_is_judged_by_its_content(tmp_path: Path, content: bytes, name: str,
                                                     kind: str | None) -> None:
    source = io.BytesIO(content)
    if kind is None:
        with pytest.raises(evidence_files.NotAllowedType):
            evidence_files.stage(tmp_path, source, limit=1 << 20, filename=name)
        assert not any((tmp_path / evidence_files.INCOMING).iterdir())
        return
    staged = evidence_files.stage(tmp_path, source, limit=1 << 20, filename=name)
    assert staged.media_type == kind and staged.size == len(content)
    path, created = evidence_files.place(tmp_path, staged)
    assert created and path.read_bytes() == content
    assert evidence_files.sha256_of(path) == staged.sha256 == path.parent.name + path.name


def test_an_upload_lying_about_its_type_is_refused_and_nothing_is_kept(site: Site) -> None:
    adam = site.client("anowak")
    before = site.tables()
    for name, content, declared in (
            ("minutes.pdf", b"\x7fELF\x02\x01\x01" + b"\x00" * 64, "application/pdf"),
            ("rota.docx", _office({"payload.exe": b"MZ"}), "application/vnd.openxmlformats"),
            ("photo.png", b"\x00\x01\x02 binary junk", "image/png")):
        answer = send(adam, A2, "evidence", {"description": f"Evidence {HOSTILE}"},
                      {"file": (name, content, declared)})
        assert answer.status_code == 400, name
        beside = main(answer).split('id="evidence-file-error"', 1)[1].split("</span>\n", 1)[0]
        assert "not one of the kinds accepted" in beside and "whatever its name says" in beside
        assert "Evidence &lt;script&gt;" in main(answer)  # what was typed is kept, inert
    completed = send(adam, A2, "complete", {"description": "x"},
                     {"file": ("done.pdf", b"MZ\x90\x00", "application/pdf")})
    assert completed.status_code == 400
    assert site.tables() == before and site.stored() == []


def test_an_upload_over_the_limit_is_refused_while_it_is_read(template: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    site = make_site(template, tmp_path, monkeypatch, QIP_UPLOAD_LIMIT="64KB")
    adam = site.client("anowak")
    before = site.tables()
    big = b"%PDF-1.4\n" + b"0" * (64 * 1024)  # just over the limit: the form comes back
    answer = send(adam, A2, "evidence", {"description": "Big audit"}, pdf("big.pdf") | {
        "file": ("big.pdf", big, "application/pdf")})
    assert answer.status_code == 413
    assert "larger than 64 KB" in main(answer).split('id="evidence-file-error"', 1)[1]
    assert 'value="Big audit"' in answer.text
    huge = b"%PDF-1.4\n" + b"0" * (3 * 1024 * 1024)  # far over: refused before it is all read
    answer = send(adam, A2, "evidence", {"description": "Huge"},
                  {"file": ("huge.pdf", huge, "application/pdf")})
    assert answer.status_code == 413 and "larger than 64 KB" in answer.text
    assert site.tables() == before and site.stored() == []
    exact = b"%PDF-1.4\n" + b"0" * (64 * 1024 - 9)
    assert send(adam, A2, "evidence", {"description": "Exactly"},
                {"file": ("exact.pdf", exact, "application/pdf")}).status_code == 303
    site.rt.db.dispose()


def test_an_unusable_upload_limit_is_refused_naming_the_setting() -> None:
    with pytest.raises(Exception, match="QIP_UPLOAD_LIMIT: 'lots'"):
        evidence_files.parse_size("lots")
    assert evidence_files.parse_size("25MB") == 25 * 1024 * 1024
    assert evidence_files.parse_size("1.5 mb") == int(1.5 * 1024 * 1024)


# --- hostile text ----------------------------------------------------------------------------


def test_html_script_and_jinja_in_every_field_stay_inert(site: Site) -> None:
    adam, daniel = site.client("anowak"), site.client("dadeyemi")
    send(adam, A2, "progress", {"note": HOSTILE})
    send(adam, A2, "evidence", {"description": HOSTILE},
         {"file": (f"{HOSTILE}.pdf", PDF, "application/pdf")})
    send(adam, A2, "new-date", {"day": "30", "month": "4", "year": "2026", "reason": HOSTILE})
    request_id = re.search(r'/new-date/(\d+)"', daniel.get(action_path(A2)).text).group(1)
    send(daniel, A2, f"new-date/{request_id}", {"decision": "refuse", "reason": HOSTILE})
    send(daniel, A2, "reassign", {"new_owner": "lokafor", "reason": HOSTILE})
    send(site.client("lokafor"), A2, "complete", {"note": HOSTILE})
    send(daniel, A2, "verify", {"note": HOSTILE})
    invalid = send(adam, A2, "progress", {"note": ""})  # and on a form shown again
    pages = [adam.get(action_path(A2)), daniel.get(action_path(A2)), adam.get("/"),
             daniel.get("/"), invalid,
             send(adam, A2, "new-date", {"day": "x", "month": "", "year": "", "reason": HOSTILE})]
    for page in pages:
        text = page.text
        assert "<script>alert" not in text and "<img src=x" not in text
        assert "49" not in main(page).replace("2049", "")  # {{ 7*7 }} was never evaluated
    shown = main(pages[1])
    assert shown.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") >= 3
    assert "{{ 7*7 }}{% if 1 %}jinja{% endif %}" in shown
    evidence_id = site.rows(Evidence)[-1].id
    disposition = daniel.get(f"/evidence/{evidence_id}").headers["content-disposition"]
    offered = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert re.fullmatch(r"[A-Za-z0-9._ -]+\.pdf", offered), disposition
    assert "<" not in disposition and "{" not in disposition


# --- acknowledging an escalation ---------------------------------------------------------------


LADDER = ("escalate.line-manager", "escalate.sponsor", "escalate.board")


def _tick(site: Site, day: str) -> list[str]:
    """Tick on a morning; the rungs of the overdue ladder sent about A2 so far."""
    site.rt.clock.set(f"{day}T08:00")
    notifications.tick(site.rt, worker="test")
    return sorted(n.rule_id for n in site.rows(Notification)
                  if n.entity_id == A2 and n.kind == "escalation" and n.rule_id in LADDER)


def test_acknowledging_pauses_the_next_rung_and_tells_the_owner(site: Site) -> None:
    # 8 working days overdue: the line manager is told (and, silent for 30 days, the sponsor)
    assert _tick(site, "2026-03-25") == ["escalate.line-manager"]
    daniel = site.client("dadeyemi")
    page = daniel.get(action_path(A2))
    assert "You were sent the escalation" in page.text
    answer = send(daniel, A2, "acknowledge")
    assert answer.headers["location"] == f"/actions/{A2}?done=acknowledged"
    (ack,) = site.rows(Acknowledgement)
    assert (ack.by_id, ack.paused_until) == ("dadeyemi", date(2026, 4, 1))  # 5 working days
    event = site.audit(A2)[-1]
    assert (event.what, event.actor) == ("acknowledge", "dadeyemi")
    assert "waits 5 working days, until 1 April 2026" in event.reason
    assert event.detail["via"] == {"door": "web", "signin": "dev"}
    told = [n for n in site.rows(Notification) if n.kind == "acknowledgement"]
    assert [(n.recipient_id, n.state) for n in told] == [("anowak", "queued")]
    assert "Daniel Adeyemi acknowledged the escalation about QIP-2026-014/A2" in told[0].body_text
    again = send(daniel, A2, "acknowledge")
    assert again.status_code == 409 and "acknowledged this escalation on 25 March 2026" in again.text
    # the sponsor's rung (10 working days overdue, 27 March) waits out the grace period
    assert _tick(site, "2026-03-27") == ["escalate.line-manager"]
    with site.rt.db.read() as session:
        plan = session.get(Plan, PLAN)
        assert plan is not None and plan.next_check_at is not None
        assert plan.next_check_at.date() <= date(2026, 4, 1)
    assert _tick(site, "2026-03-31") == ["escalate.line-manager"]
    assert _tick(site, "2026-04-01") == ["escalate.line-manager", "escalate.sponsor"]


def test_the_owners_progress_still_stops_the_ladder(site: Site) -> None:
    _tick(site, "2026-03-25")
    send(site.client("dadeyemi"), A2, "acknowledge")
    send(site.client("anowak"), A2, "progress", {"note": "Agency trainer booked"})
    assert _tick(site, "2026-04-01") == ["escalate.line-manager"]
    assert _tick(site, "2026-04-15") == ["escalate.line-manager"]


def test_only_the_owner_or_someone_an_escalation_went_to_acknowledges(site: Site) -> None:
    _tick(site, "2026-03-25")
    jaya, adam = site.client("jpatel"), site.client("anowak")
    before = site.tables()
    refused = send(jaya, A2, "acknowledge")
    assert refused.status_code == 403 and "Adam Nowak (anowak)" in main(refused)
    assert site.rows(Acknowledgement) == []
    assert {t: r for t, r in site.tables().items() if t not in ("auditevent", "audithead")} == \
        {t: r for t, r in before.items() if t not in ("auditevent", "audithead")}
    owner = send(adam, A2, "acknowledge")  # the owner's word: no pause, and no message
    assert owner.status_code == 303 and site.rows(Acknowledgement) == []
    assert site.audit(A2)[-1].what == "acknowledge"


@pytest.mark.parametrize(("block", "words"), [
    ("acknowledgement:\n  grace_working_days: 0\n", "greater than or equal to 1"),
    ("acknowledgement:\n  grace_working_days: soon\n", "valid integer"),
    ("acknowledgement:\n  grace_days: 5\n", "grace_days"),
])
def test_the_grace_period_is_a_checked_rules_setting(config: Path, block: str, words: str) -> None:
    from qip_flow.config.rules import load_rules
    from qip_flow.decide.vocabulary import EngineVocabulary
    from qip_flow.errors import InvalidDefinition
    from qip_flow.workflow.machines import Workflows

    path = config / "rules" / "reminders.yaml"
    text = path.read_text()
    path.write_text(text.replace("acknowledgement:\n  grace_working_days: 5\n", block))
    defs = Workflows.from_folder(config / "workflows").defs
    vocab = EngineVocabulary(defs["plan"].state_names(), defs["action"].state_names())
    with pytest.raises(InvalidDefinition) as refused:
        load_rules(config / "rules", vocab)
    problems = "\n".join(refused.value.details or [refused.value.message])
    assert "reminders.yaml" in problems and words in problems
    path.write_text(text.replace("grace_working_days: 5", "grace_working_days: 8"))
    assert load_rules(config / "rules", vocab).acknowledgement.grace_working_days == 8
    (config / "rules" / "extra.yaml").write_text(
        "ruleset: extra\nacknowledgement:\n  grace_working_days: 2\nrules:\n"
        "  - id: x.one\n    description: x\n    when: {fact: state, is: closed}\n"
        "    then: {outcome: rag, rating: green, reason: x}\n")
    with pytest.raises(InvalidDefinition) as twice:
        load_rules(config / "rules", vocab)
    assert "`acknowledgement:` is also set" in "\n".join(twice.value.details)


# --- audit verify, export, the migration -------------------------------------------------------


def test_audit_verify_checks_every_stored_file(site: Site, cli: Any) -> None:
    adam = site.client("anowak")
    send(adam, A2, "evidence", {"description": "Register"}, pdf())
    send(adam, A2, "evidence", {"description": "Notes"},
         {"file": ("notes.txt", b"all well\n", "text/plain")})
    url = f"sqlite:///{site.folder / 'qip.db'}"
    code, out, _ = cli(url, "audit", "verify")
    assert code == 0 and "2 evidence files checked" in out
    first, second = site.rows(Evidence)[-2:]
    changed = evidence_files.path_of(site.evidence, first.sha256 or "")
    changed.chmod(0o644)
    changed.write_bytes(PDF.replace(b"Catalog", b"Catalug"))
    evidence_files.path_of(site.evidence, second.sha256 or "").unlink()
    code, out, err = cli(url, "audit", "verify")
    assert code == 1
    said = out + err
    assert f"evidence {first.id}: its file {changed} has changed" in said
    assert f"evidence {second.id}: its file" in said and "is missing" in said


def test_export_includes_the_evidence_files(site: Site, cli: Any) -> None:
    adam = site.client("anowak")
    send(adam, A2, "evidence", {"description": "Register"}, pdf("register.pdf"))
    row = site.rows(Evidence)[-1]
    url = f"sqlite:///{site.folder / 'qip.db'}"
    code, out, _ = cli(url, "export", "--out", str(site.folder / "out"))
    assert code == 0 and "1 evidence file" in out
    assert (site.folder / "out" / "evidence" / f"{row.id}-register.pdf").read_bytes() == PDF
    code, _, _ = cli(url, "export", "--out", str(site.folder / "out.zip"))
    with zipfile.ZipFile(site.folder / "out.zip") as package:
        assert package.read(f"evidence/{row.id}-register.pdf") == PDF
        assert '"evidence_files"' in package.read("qip-export.json").decode()


def test_audit_verify_deep_compares_the_files_hash_with_the_trail(site: Site, cli: Any) -> None:
    send(site.client("anowak"), A2, "evidence", {"description": "Register"}, pdf())
    url = f"sqlite:///{site.folder / 'qip.db'}"
    with sqlite3.connect(site.folder / "qip.db") as conn:
        conn.execute("update evidence set sha256 = ? where sha256 is not null", ("0" * 64,))
    code, out, err = cli(url, "audit", "verify", "--deep")
    assert code == 1 and "sha256" in out + err


def test_migration_0017_goes_up_and_down(tmp_path: Path) -> None:
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    db.init(simulation=True)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    mine = [d for d in diff if "evidence" in repr(d) or "acknowledgement" in repr(d)]
    assert mine == []
    cfg = db._alembic()
    with db.engine.begin() as conn:  # down with a file's evidence and an acknowledgement in it
        conn.exec_driver_sql("insert into person (id, name, role, level, groups, roles, "
                             "services, digest) values ('p', 'P', '', 'manager', '[]', '[]', "
                             "'[]', 0)")
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0016")
        columns = [r[1] for r in conn.exec_driver_sql("pragma table_info(evidence)")]
        assert "sha256" not in columns
        command.upgrade(cfg, "head")
        columns = [r[1] for r in conn.exec_driver_sql("pragma table_info(evidence)")]
        assert {"sha256", "size", "media_type", "filename"} <= set(columns)
    db.dispose()


def test_a_backup_holds_the_evidence_files_and_a_restore_puts_them_back(site: Site,
                                                                        cli: Any) -> None:
    send(site.client("anowak"), A2, "evidence", {"description": "Register"}, pdf())
    (site.evidence / evidence_files.INCOMING / "upload-half").write_bytes(b"%PDF-half")
    sha = site.rows(Evidence)[-1].sha256 or ""
    url = f"sqlite:///{site.folder / 'qip.db'}"
    code, _, err = cli(url, "backup", str(site.folder / "backup"))
    assert code == 0, err
    kept = site.folder / "backup" / "evidence" / sha[:2] / sha[2:]
    assert kept.read_bytes() == PDF
    assert not (site.folder / "backup" / "evidence" / evidence_files.INCOMING).exists()
    site.rt.db.dispose()
    shutil.rmtree(site.evidence)
    code, _, err = cli(url, "restore", str(site.folder / "backup"), "--force")
    assert code == 0, err
    assert evidence_files.path_of(site.evidence, sha).read_bytes() == PDF
    assert cli(url, "audit", "verify")[0] == 0
