"""The API's contract, in this process over real SQLite and PostgreSQL: a measurement pushed
twice with one idempotency key is recorded once; a token without the scope, or for another
service, gets 403 and nothing changes; an expired or revoked token gets 401; a concurrent change
gets 409 naming the version; every error is problem+json; a sheet is checked whole; a token
acts as a named service account, never a person; the rate limit answers 429 with Retry-After."""

from __future__ import annotations

import io
import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from api_client import MAPLE, client, session_of, token
from conftest import EXAMPLES, contents, snapshot
from sqlmodel import select

from qip_flow import SHIPPED_CONFIG
from qip_flow.clock import Clock
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle, loading, tokens
from qip_flow.services.policy import Act, Actor, Policy, ServiceAccount
from qip_flow.store.db import Database
from qip_flow.store.models import ApiToken, AuditEvent, Measurement, Plan

PLAN = "QIP-2026-014"
MAR = f"{PLAN}/mar-complete"
PROBLEM = "application/problem+json"


def _started(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The examples, the medication plan approved and started on 22 January; a secret key."""
    monkeypatch.setenv("QIP_SECRET_KEY", "k" * 40)
    rt.clock.set("2026-01-15")
    loading.load_files(rt, [EXAMPLES], actor="test")
    rt.clock.set("2026-01-22T10:00")
    lifecycle.sign_off(rt, PLAN, "approval", by="dadeyemi")
    lifecycle.fire_event(rt, PLAN, "start", by="jpatel")
    return rt


@pytest.fixture
def api_rt(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """On SQLite and on PostgreSQL: for what the database decides (keys, locks, versions)."""
    return _started(runtime, monkeypatch)


@pytest.fixture
def api_lite(sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """On SQLite only: for what the web layer decides (errors, limits, documents)."""
    return _started(Runtime(db=sqlite_db, clock=Clock(), config_dir=SHIPPED_CONFIG), monkeypatch)


def _measurements(rt: Runtime) -> list[Measurement]:
    with rt.db.read() as session:
        return list(session.exec(select(Measurement)).all())


def _without_token_use(tables: dict[str, list[tuple[object, ...]]]) -> dict[str, object]:
    """Every table, but a token's last use (written once a minute: "every use is logged")."""
    return {name: rows for name, rows in tables.items() if name != "apitoken"}


def test_a_measurement_pushed_twice_with_one_key_is_recorded_once(api_rt: Runtime) -> None:
    web, auth = client(api_rt), token(api_rt)
    body = {"indicator": MAR, "value": 91, "date": "2026-01-21", "idempotency_key": "emar-1"}
    first = web.post("/api/v1/measurements", json=body, headers=auth)
    again = web.post("/api/v1/measurements", json=body, headers=auth)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["measurements"][0]["id"] == again.json()["measurements"][0]["id"]
    assert again.json() == {**first.json(), "recorded": 0, "replayed": 1, "measurements": [
        {**first.json()["measurements"][0], "replayed": True}]}
    assert [(m.indicator_id, m.value) for m in _measurements(api_rt)] == [(MAR, 91.0)]
    # the same key for another value is refused, naming the key
    other = web.post("/api/v1/measurements", json={**body, "value": 92}, headers=auth)
    assert other.status_code == 422 and other.headers["content-type"] == PROBLEM
    assert other.json()["errors"][0]["path"] == "measurement.idempotency_key"
    assert len(_measurements(api_rt)) == 1


def test_a_retried_batch_recorded_at_once_by_two_pushes_is_recorded_once(
        api_rt: Runtime) -> None:
    """Two pushes of one batch at the same moment (a retry racing the original): the plan's
    one writer serialises them, the second finds the keys and records nothing."""
    web, auth = client(api_rt), token(api_rt)
    batch = {"measurements": [{"indicator": MAR, "value": 80 + i, "date": "2026-01-2" + str(i),
                               "idempotency_key": f"race-{i}"} for i in range(2)]}
    answers: list[int] = []

    def push() -> None:
        answers.append(web.post("/api/v1/measurements", json=batch, headers=auth).status_code)

    threads = [threading.Thread(target=push) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200, 201]
    assert sorted(m.value for m in _measurements(api_rt)) == [80.0, 81.0]


@pytest.mark.parametrize(("scopes", "plans", "why"), [
    (("plans:read",), (MAPLE,), "has no measurements:write scope"),
    (("measurements:write",), ("service:Cedar Court",), "is for Cedar Court, not plan QIP-2026-014"),
])
def test_a_token_without_the_scope_or_for_another_service_gets_403_and_nothing_changes(
        api_rt: Runtime, scopes: tuple[str, ...], plans: tuple[str, ...], why: str) -> None:
    web, auth = client(api_rt), token(api_rt, scopes=scopes, plans=plans)
    web.get("/api/v1/me", headers=auth)  # its first use is noted; then the rest is compared
    before = snapshot(api_rt.db)
    pushes = [{"indicator": MAR, "value": 91, "idempotency_key": "x"},
              {"measurements": [{"indicator": MAR, "value": 91, "idempotency_key": "y"}]}]
    for body in pushes:
        refused = web.post("/api/v1/measurements", json=body, headers=auth)
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == PROBLEM
        assert why in refused.json()["detail"]
    assert _without_token_use(snapshot(api_rt.db)) == _without_token_use(before)


def test_an_expired_or_revoked_token_gets_401(api_lite: Runtime) -> None:
    web = client(api_lite)
    expiring, revoked = token(api_lite, "expiring"), token(api_lite, "revoked")
    assert web.get("/api/v1/me", headers=expiring).status_code == 200
    with api_lite.db.write() as session:  # its last day passes
        row = session.exec(select(ApiToken).where(ApiToken.name == "expiring")).one()
        row.expires = row.created_at.date() - timedelta(days=1)
    tokens.revoke(api_lite, "revoked", by="cevans")
    for auth in (expiring, revoked, {"Authorization": "Bearer qip_made-up"},
                 {"Authorization": "Basic abc"}):
        answer = web.post("/api/v1/measurements", headers=auth,
                          json={"indicator": MAR, "value": 1, "idempotency_key": "z"})
        assert answer.status_code == 401, auth
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.json()["type"].endswith("#problem-unauthenticated")
    assert _measurements(api_lite) == []
    listed = {r["name"]: r["state"] for r in tokens.listing(api_lite)}
    assert listed == {"expiring": "expired", "revoked": "revoked"}


def test_a_token_acts_as_a_named_service_account_never_a_person(api_rt: Runtime) -> None:
    web, auth = client(api_rt), token(api_rt)
    assert web.post("/api/v1/measurements", headers=auth, json={
        "indicator": MAR, "value": 93, "idempotency_key": "sa-1"}).status_code == 201
    with api_rt.db.read() as session:
        event = session.exec(select(AuditEvent).where(
            AuditEvent.what == "measurement recorded")).one()
        row = session.exec(select(Measurement)).one()
    assert event.actor == "emar-feed, for Maple House"
    assert event.detail["door"] == "api" and event.detail["token"] == "emar-feed"
    assert row.recorded_by_id is None
    # and a person's act is refused, whatever its scopes
    every = token(api_rt, "everything", scopes=tuple(sorted(tokens.SCOPES)), plans=("all",))
    for act in ("progress", "complete"):
        refused = web.post(f"/api/v1/plans/{PLAN}/actions/A1/{act}", headers=every,
                           json={"note": "done"})
        assert refused.status_code == 403 and "not a person" in refused.json()["detail"]


def test_the_policy_never_lets_a_service_account_sign_approve_or_verify(api_lite: Runtime) -> None:
    account = Actor.service(ServiceAccount("all-powerful", frozenset(tokens.SCOPES),
                                           every_plan=True, label="all-powerful, for every plan"))
    with api_lite.db.read() as session:
        policy = Policy(session, api_lite.rules.access, api_lite.clock.now())
        plan = session.get(Plan, PLAN)
        from qip_flow.store.models import Action

        action = session.get(Action, f"{PLAN}/A1")
        answers = {act: policy.decide(account, act, plan, action) for act in Act}
    allowed = {act for act, answer in answers.items() if answer}
    assert allowed == {Act.VIEW, Act.RECORD_MEASUREMENT, Act.RUN_REPORTS, Act.EXPORT,
                       Act.MANAGE_WEBHOOKS}
    for act in (Act.SIGN_OFF, Act.VERIFY, Act.DECIDE_NEW_DATE, Act.COMPLETE, Act.MANAGE_TOKENS):
        assert "service account" in answers[act].explain()


def test_a_change_on_an_older_version_gets_409_naming_the_current_one(api_rt: Runtime) -> None:
    web = client(api_rt)
    csrf = session_of(api_rt, web, "jpatel")  # the owner of A1, signed in in a browser
    seen = web.get(f"/api/v1/plans/{PLAN}").json()["version"]
    lifecycle.record_measurement(api_rt, PLAN, "mar-complete", 88, by="hwright")
    before = snapshot(api_rt.db)
    stale = web.post(f"/api/v1/plans/{PLAN}/actions/A1/progress", headers=csrf,
                     json={"note": "Audit tool drafted", "expected_version": seen})
    assert stale.status_code == 409 and stale.headers["content-type"] == PROBLEM
    problem = stale.json()
    assert problem["expected_version"] == seen and problem["current_version"] == seen + 1
    assert f"version {seen}, now {seen + 1}" in problem["detail"] and "hwright" in problem["detail"]
    assert snapshot(api_rt.db) == before
    fresh = web.post(f"/api/v1/plans/{PLAN}/actions/A1/progress", headers=csrf,
                     json={"note": "Audit tool drafted", "expected_version": seen + 1})
    assert fresh.status_code == 201 and fresh.json()["version"] == seen + 2


def test_a_browser_session_changes_nothing_without_its_form_token(api_lite: Runtime) -> None:
    web = client(api_lite)
    csrf = session_of(api_lite, web, "jpatel")
    assert web.get(f"/api/v1/plans/{PLAN}/actions/A1").status_code == 200
    before = snapshot(api_lite.db)
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        refused = web.post(f"/api/v1/plans/{PLAN}/actions/A1/progress", headers=headers,
                           json={"note": "x"})
        assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    assert snapshot(api_lite.db) == before
    assert web.post(f"/api/v1/plans/{PLAN}/actions/A1/progress", headers=csrf,
                    json={"note": "x"}).status_code == 201


def test_a_sheet_is_checked_whole_and_each_bad_row_named(api_lite: Runtime) -> None:
    web, auth = client(api_lite), token(api_lite)
    csv = ("indicator,date,value,reaudit\n"
           f"{MAR},2026-01-19,90,no\n"
           f"{PLAN}/falls,2026-01-19,3,no\n"
           f"{MAR},2026-02-30,91,maybe\n"
           f"{MAR},2026-01-20,ninety,no\n")
    before = snapshot(api_lite.db)
    refused = web.post("/api/v1/measurements", content=csv.encode(), headers={
        **auth, "content-type": "text/csv"})
    assert refused.status_code == 422
    paths = sorted(e["path"] for e in refused.json()["errors"])
    assert paths == ["row 3.indicator", "row 4.date", "row 4.reaudit", "row 5.value"]
    assert _without_token_use(snapshot(api_lite.db)) == _without_token_use(before)
    good = "indicator,date,value,reaudit\n" + f"{MAR},2026-01-19,90,no\n{MAR},2026-01-20,92,yes\n"
    first = web.post("/api/v1/measurements", content=good.encode(),
                     headers={**auth, "content-type": "text/csv"})
    again = web.post("/api/v1/measurements", content=good.encode(),
                     headers={**auth, "content-type": "text/csv"})
    assert (first.json()["recorded"], again.json()["recorded"]) == (2, 0)
    assert [(m.value, m.reaudit) for m in _measurements(api_lite)] == [(90.0, False), (92.0, True)]


def test_an_xlsx_workbook_is_read_like_a_csv(api_lite: Runtime) -> None:
    from datetime import date

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(["Indicator", "Date", "Value", "Re-audit"])
    sheet.append(["mar-complete", date(2026, 1, 20), 94, "yes"])
    sheet.append([MAR, "21/01/2026", 95.5, None])
    data = io.BytesIO()
    book.save(data)
    web, auth = client(api_lite), token(api_lite)
    kind = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    refused = web.post("/api/v1/measurements", content=data.getvalue(),
                       headers={**auth, "content-type": kind})
    assert refused.status_code == 422  # row 2 names no plan
    assert refused.json()["errors"][0]["path"] == "row 2.indicator"
    sheet["A2"] = MAR
    data = io.BytesIO()
    book.save(data)
    answer = web.post("/api/v1/measurements", content=data.getvalue(),
                      headers={**auth, "content-type": kind})
    assert answer.status_code == 201, answer.text
    assert [(m.on.isoformat(), m.value, m.reaudit) for m in _measurements(api_lite)] == [
        ("2026-01-20", 94.0, True), ("2026-01-21", 95.5, False)]


def test_errors_are_problems_with_paths(api_lite: Runtime) -> None:
    web, auth = client(api_lite), token(api_lite, scopes=("measurements:write", "plans:read"))
    batch = {"measurements": [
        {"indicator": MAR, "value": 1, "idempotency_key": "a"},
        {"indicator": MAR, "value": "lots", "idempotency_key": "b"},
        {"indicator": MAR, "value": 2, "idempotency_key": "c", "colour": "red"}]}
    invalid = web.post("/api/v1/measurements", json=batch, headers=auth).json()
    assert {e["path"] for e in invalid["errors"]} == {"measurements[1].value",
                                                      "measurements[2].colour"}
    assert invalid["status"] == 422 and invalid["instance"] == "/api/v1/measurements"
    missing = web.post("/api/v1/measurements", json={"indicator": MAR, "value": 1}, headers=auth)
    assert missing.json()["errors"][0]["path"] == "measurement.idempotency_key"
    malformed = web.post("/api/v1/measurements", content=b"{not json",
                         headers={**auth, "content-type": "application/json"})
    assert malformed.status_code == 400
    unknown = web.get("/api/v1/plans/QIP-2026-999", headers=auth)
    assert unknown.status_code == 404 and "unknown plan" in unknown.json()["detail"]
    bad_filter = web.get("/api/v1/plans?rag=purple", headers=auth)
    assert bad_filter.status_code == 422 and "red" in bad_filter.json()["detail"]
    for answer in (missing, malformed, unknown, bad_filter):
        assert answer.headers["content-type"] == PROBLEM
        assert set(answer.json()) >= {"type", "title", "status", "detail", "instance", "errors"}


def test_plans_are_paged_with_a_cursor_within_the_tokens_services(api_lite: Runtime) -> None:
    web = client(api_lite)
    auth = token(api_lite, "bi", scopes=("plans:read",), plans=(MAPLE, "service:Cedar Court"))
    first = web.get("/api/v1/plans?limit=1", headers=auth).json()
    rest = web.get(f"/api/v1/plans?limit=5&cursor={first['next_cursor']}", headers=auth).json()
    ids = [p["id"] for p in first["items"] + rest["items"]]
    assert ids == sorted(ids) and len(ids) == 3 and rest["next_cursor"] is None
    assert "QIP-2026-021" not in ids  # Willow Lodge is not the token's
    assert web.get("/api/v1/plans/QIP-2026-021", headers=auth).status_code == 403
    assert web.get("/api/v1/plans?cursor=nonsense", headers=auth).status_code == 422


def test_the_rate_limit_answers_429_with_retry_after(api_lite: Runtime) -> None:
    web, auth = client(api_lite, api_rate_per_minute=3), token(api_lite, scopes=("plans:read",))
    answers = [web.get("/api/v1/me", headers=auth) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert answers[-1].headers["content-type"] == PROBLEM


def test_a_body_over_the_limit_gets_413(api_lite: Runtime) -> None:
    web, auth = client(api_lite, api_max_body=2048), token(api_lite)
    answer = web.post("/api/v1/measurements", content=b"x" * 4096,
                      headers={**auth, "content-type": "text/csv"})
    assert answer.status_code == 413 and answer.headers["content-type"] == PROBLEM


def test_the_openapi_document_and_its_docs_page(api_lite: Runtime) -> None:
    web = client(api_lite)
    doc = web.get("/api/v1/openapi.json").json()
    assert doc["servers"] == [{"url": "/api/v1"}]
    operations = {(m.upper(), p) for p, ms in doc["paths"].items() for m in ms}
    assert {("GET", "/plans"), ("POST", "/measurements"), ("GET", "/plans/{plan_id}/audit"),
            ("POST", "/plans/{plan_id}/actions/{ref}/evidence"), ("GET", "/export"),
            ("GET", "/reports/board"), ("POST", "/webhooks")} <= operations
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert "application/problem+json" in op["responses"]["401"]["content"], (method, path)
    page = web.get("/api/v1/docs")
    assert page.status_code == 200 and "<script" not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'id="problem-conflict"' in page.text and "POST /measurements" in page.text


def test_a_deep_audit_verify_agrees_with_what_a_token_recorded(api_lite: Runtime) -> None:
    from qip_flow.services import integrity

    web, auth = client(api_lite), token(api_lite)
    assert web.post("/api/v1/measurements", headers=auth, json={
        "indicator": MAR, "value": 93, "idempotency_key": "deep-1"}).status_code == 201
    found = integrity.verify(api_lite, deep=True)
    assert found.deep is not None and found.deep.differences == [], found.deep.differences


def test_every_api_route_declares_its_policy(api_lite: Runtime) -> None:
    from qip_flow.web.api import PREFIX, route_policy

    doc = client(api_lite).get("/api/v1/openapi.json").json()
    operations = {(m.upper(), PREFIX + p) for p, ms in doc["paths"].items() for m in ms}
    hidden = {("GET", PREFIX + "/openapi.json"), ("GET", PREFIX + "/docs")}
    assert operations | hidden == set(route_policy())


def test_token_commands_and_measure_from_a_sheet(cli: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'qip.db'}"
    assert cli(url, "init", "--simulation")[0] == 0
    assert cli(url, "--now", "2026-01-15", "load", str(EXAMPLES), "--by", "cevans")[0] == 0
    code, out, _ = cli(url, "token", "create", "--name", "emar-feed", "--scope",
                       "measurements:write", "--plans", "service:Maple House", "--expires",
                       "2027-03-31", "--by", "cevans")
    assert code == 0 and out.strip().splitlines()[-1].startswith("qip_")
    made = out.strip().splitlines()[-1]
    assert made not in str(contents(tmp_path / "qip.db"))  # only its hash is kept
    refused = cli(url, "token", "create", "--name", "other", "--scope", "plans:read",
                  "--plans", "all", "--by", "jpatel")
    assert refused[0] == 1 and "only administrators" in refused[2]
    code, out, _ = cli(url, "--json", "token", "list")
    assert code == 0 and json.loads(out)[0]["for"] == "Maple House"
    sheet = tmp_path / "mar.csv"
    sheet.write_text("indicator,date,value,reaudit\nmar-complete,2026-01-10,90,no\n"
                     "mar-complete,2026-01-12,91,yes\n", encoding="utf-8")
    for recorded in (2, 0):  # the same sheet twice: each row once
        code, out, err = cli(url, "--now", "2026-01-15T10:00", "--json", "measure", PLAN,
                             "--from", str(sheet), "--by", "jpatel")
        assert code == 0, err
        assert json.loads(out)["recorded"] == recorded
    bad = tmp_path / "bad.csv"
    bad.write_text(f"indicator,date,value\n{PLAN}/nope,2026-01-10,90\n{MAR},x,y\n",
                   encoding="utf-8")
    before = contents(tmp_path / "qip.db")
    code, _, err = cli(url, "--now", "2026-01-15T10:00", "measure", "--from", str(bad),
                       "--by", "jpatel")
    assert code == 2 and "row 2.indicator" in err and "row 3.date" in err and "row 3.value" in err
    assert contents(tmp_path / "qip.db") == before
    assert cli(url, "token", "revoke", "emar-feed", "--by", "cevans")[0] == 0
    code, out, _ = cli(url, "--json", "token", "list")
    assert json.loads(out)[0]["state"] == "revoked"


def test_the_owner_uploads_evidence_checked_by_its_content(api_lite: Runtime, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from qip_flow.store import evidence_files
    from qip_flow.store.models import Evidence

    monkeypatch.setenv("QIP_EVIDENCE_DIR", str(tmp_path / "evidence"))
    web = client(api_lite)
    csrf = session_of(api_lite, web, "jpatel")
    url = f"/api/v1/plans/{PLAN}/actions/A1/evidence"
    before = snapshot(api_lite.db)
    lying = web.post(url, headers=csrf, data={"description": "MAR audit"},
                     files={"file": ("audit.pdf", b"\x00\x01MZ not a pdf", "application/pdf")})
    assert lying.status_code == 422 and "judged by what is inside it" in lying.json()["detail"]
    assert snapshot(api_lite.db) == before
    pdf = b"%PDF-1.4\n% a small audit\n%%EOF\n"
    answer = web.post(url, headers=csrf, data={"description": "MAR audit April"},
                      files={"file": ("audit.pdf", pdf, "application/pdf")})
    assert answer.status_code == 201, answer.text
    digest = answer.json()["sha256"]
    assert evidence_files.path_of(tmp_path / "evidence", digest).read_bytes() == pdf
    with api_lite.db.read() as session:
        row = session.exec(select(Evidence).where(Evidence.action_id == f"{PLAN}/A1")).one()
    assert row.description == "MAR audit April" and row.sha256 == digest
