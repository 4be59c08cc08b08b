"""The plan pages in this process (FastAPI's test client over a real SQLite file): the Plan page
with its criteria in words, chart and history; the closure sign-off refused to a senior manager
outside the safeguarding group with each reason, and to an incomplete record beside each field,
changing nothing and keeping what was typed; the group's member signing it as herself; the
Plans portfolio with its filters, scope and packs; the Rules page; and hostile text kept inert
on every page."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import plan_evidence
from sqlmodel import col, select
from web_plans import (
    GUEST,
    LEAD,
    MEDICATION,
    SAFEGUARDING,
    app_client,
    build,
    closure_form,
    copy,
    runtime,
    signed_in,
    token_of,
    unchanged,
)

from qip_flow.runtime import Runtime
from qip_flow.store.models import AuditEvent, Evidence, Finding, Indicator, Person, Plan, SignOff

FORM = f"/plans/{SAFEGUARDING}/sign-off/closure"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("plans-template"))


@pytest.fixture(scope="module")
def shared(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """One copy for the tests that only read."""
    rt = runtime(copy(template, tmp_path_factory.mktemp("plans-read")))
    yield rt
    rt.db.dispose()


@pytest.fixture
def fresh(template: Path, tmp_path: Path) -> Iterator[Runtime]:
    """A copy of its own for a test that signs."""
    rt = runtime(copy(template, tmp_path))
    yield rt
    rt.db.dispose()


def main_text(page: str) -> str:
    """The visible text of the page's <main>, tags removed, entities decoded."""
    body = page.split('<main', 1)[1].split("</main>", 1)[0]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def post(client: Any, path: str, data: dict[str, Any]) -> Any:
    return client.post(path, data={**data, "csrf_token": token_of(client.get(path).text)})


def test_the_plan_page_shows_state_rag_criteria_in_words_charts_and_history(
        shared: Runtime) -> None:
    with app_client(shared) as client:
        page = signed_in(client, shared, "tbrennan").get(f"/plans/{SAFEGUARDING}")
        assert page.status_code == 200
        text = main_text(page.text)
        for words in ("Safeguarding escalation and recording at Willow Lodge", "Closure review",
                      "Green", "no red or amber rule applies", "Tom Brennan", "Daniel Adeyemi",
                      "Every action is complete and verified by someone other than its owner",
                      "Publish an out-of-hours safeguarding escalation rota",
                      "Concerns escalated to the safeguarding lead within 24 hours",
                      "Rota and threshold guide in every office"):
            assert words in text, words
        # the accountable owner may try; the rules then judge him (he cannot sign alone)
        assert "Sign off closure" in text and "Judged for Tom Brennan signing now" in text
        assert ("Not met Sign-off group : The person signing closure belongs to the group the "
                "criteria name: Safeguarding governance group. The person signing now belongs to "
                "the required group (true when no group is required): no") in text
        assert "Met Learning : A learning summary records" in text
        assert 'href="/actions/QIP-2026-021/A1"' in page.text
        chart = re.search(r'<img class="qip-chart" src="([^"]+)" alt="([^"]+)"', page.text)
        assert chart and "latest 97% on" in chart.group(2)
        svg = client.get(chart.group(1))
        assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
        assert svg.text.startswith("<svg") and "script" not in svg.text
        assert "script-src" not in svg.headers["content-security-policy"]
        # history from the audit trail, newest first, with who and what
        history = text.split("History", 1)[1]
        assert history.index("request closure (sustaining → closure review)") < \
            history.index("approve (draft → approved)")
        assert "Daniel Adeyemi" in history


def test_the_chart_and_page_are_refused_to_people_without_a_part(shared: Runtime) -> None:
    with app_client(shared) as client:
        signed_in(client, shared, "mjones")  # Maple House support worker
        refused = client.get(f"/plans/{SAFEGUARDING}")
        assert refused.status_code == 403
        assert "Megan Jones has no part in plan QIP-2026-021" in refused.text
        assert "Who can do this" in refused.text and "Tom Brennan (tbrennan)" in refused.text
        chart = client.get(f"/plans/{SAFEGUARDING}/indicators/escalated-24h/chart.svg")
        assert chart.status_code == 403
        assert client.get(f"/plans/{SAFEGUARDING}/indicators/nope/chart.svg").status_code == 403
        signed_in(client, shared, "tbrennan")
        assert client.get(f"/plans/{SAFEGUARDING}/indicators/nope/chart.svg").status_code == 404
        assert client.get("/plans/QIP-2099-999").status_code == 404


def test_closure_by_a_senior_manager_outside_the_group_is_refused_with_each_reason(
        fresh: Runtime) -> None:
    """Ruth Mensah (senior, Quality committee) may try: the rules refuse her, reason by reason,
    and nothing changes; what she typed is still in the form."""
    evidence = plan_evidence(fresh, SAFEGUARDING)
    with app_client(fresh) as client:
        signed_in(client, fresh, "rmensah")
        plan = main_text(client.get(f"/plans/{SAFEGUARDING}").text)
        assert "Judged for Ruth Mensah signing now" in plan
        assert "Not met Sign-off group" in plan and "Met Learning" in plan
        form = client.get(FORM)
        assert form.status_code == 200 and "Sign as Ruth Mensah" in form.text
        before = unchanged(fresh.db)
        typed = closure_form(evidence[:2], meeting="Quality committee <b>2026-07-28</b>")
        refused = post(client, FORM, typed)
        assert refused.status_code == 409
        assert unchanged(fresh.db) == before
        text = main_text(refused.text)
        assert "The closure was not signed" in text and "Nothing was recorded" in text
        summary = text.split("Each reason:", 1)[1].split("Sign off closure", 1)[0]
        assert "Closure criterion not met — sign-off group" in summary
        assert "The person signing closure belongs to the group the criteria name: " \
               "Safeguarding governance group" in summary
        assert "learning" not in summary.split("sign-off group", 1)[0]  # met criteria unlisted
        # what she typed is kept, escaped
        assert 'value="Quality committee &lt;b&gt;2026-07-28&lt;/b&gt;"' in refused.text
        for i in evidence[:2]:
            assert re.search(rf'value="{i}" checked', refused.text)
        assert "Agency night staff :: threshold guide" in refused.text


def test_an_incomplete_record_is_refused_beside_each_field(fresh: Runtime) -> None:
    with app_client(fresh) as client:
        signed_in(client, fresh, "lokafor")
        before = unchanged(fresh.db)
        refused = post(client, FORM, {"meeting": "", "residual_risks": "", "learning_embedded": ""})
        assert refused.status_code == 409 and unchanged(fresh.db) == before
        for field in ("meeting", "evidence", "residual_risks", "learning_embedded"):
            assert f'href="#{field}"' in refused.text, field
            assert re.search(rf'id="{field}-error1"', refused.text), field
        assert "nhsuk-form-group--error" in refused.text
        assert "Closure criterion not met" not in refused.text  # she may sign: criteria hold


def test_bad_values_are_invalid_beside_their_field_and_change_nothing(fresh: Runtime) -> None:
    evidence = plan_evidence(fresh, SAFEGUARDING)
    with app_client(fresh) as client:
        signed_in(client, fresh, "lokafor")
        before = unchanged(fresh.db)
        with fresh.db.read() as session:
            elsewhere = session.exec(select(Evidence.id).where(
                Evidence.plan_id != SAFEGUARDING)).first()
        bad = post(client, FORM, closure_form(
            [*evidence, elsewhere or 9999, "x"], residual_risks="Agency night staff\nok :: fine",
            no_residual_risk="yes", meeting="m" * 201))
        assert bad.status_code == 400 and unchanged(fresh.db) == before
        text = main_text(bad.text)
        assert "There is a problem" in text
        assert "Choose evidence from this plan's list" in text
        assert "Residual risk 1: write the risk, then ' :: '" in text
        assert "not both" in text and "at most 200 are kept" in text
        assert bad.text.count('class="nhsuk-error-message"') >= 4


def test_a_member_of_the_group_closes_it_as_herself(fresh: Runtime) -> None:
    evidence = plan_evidence(fresh, SAFEGUARDING)
    with app_client(fresh) as client:
        signed_in(client, fresh, "lokafor", "oidc")
        done = post(client, FORM, closure_form(evidence))
        assert done.status_code == 303
        assert done.headers["location"] == f"/plans/{SAFEGUARDING}?done=closure"
        page = client.get(done.headers["location"])
        assert "You signed the closure on 28 July 2026; the plan is now closed" in main_text(page.text)
        assert "Sign off closure" not in page.text  # a closed plan offers no closure
    with fresh.db.read() as session:
        plan = session.get(Plan, SAFEGUARDING)
        assert plan is not None and plan.state == "closed"
        (signoff,) = session.exec(select(SignOff).where(SignOff.plan_id == SAFEGUARDING,
                                                        SignOff.purpose == "closure")).all()
        close = session.exec(select(AuditEvent).where(AuditEvent.entity_id == SAFEGUARDING,
                                                      AuditEvent.what == "close")).one()
    assert (signoff.by_id, signoff.group, signoff.evidence_ids) == ("lokafor", "Safeguarding "
                                                                    "governance group", evidence)
    assert signoff.residual_risks == ["Agency night staff :: threshold guide in agency induction pack"]
    assert signoff.learning_embedded == ["Induction", "Supervision framework"]
    assert signoff.evidence_reviewed == ["Incident panel outcomes", "Supervision evidence"]
    assert close.actor == "lokafor" and close.detail["via"] == {"door": "web", "signin": "oidc"}
    assert close.detail["decisions"]["closure"]["all_met"] is True


def test_sign_off_needs_a_recent_full_sign_in_never_a_link(fresh: Runtime) -> None:
    from datetime import timedelta

    from qip_flow.services import identity
    from qip_flow.store.models import WebSession

    with app_client(fresh) as client:
        signed_in(client, fresh, "lokafor", "deep-link", scope=f"{SAFEGUARDING}/A1")
        link = client.get(FORM)
        assert link.status_code == 303 and "again=1" in link.headers["location"]
        token = identity.open_session(fresh, "lokafor", "email-link")
        with fresh.db.write(gated=False) as session:
            row = session.exec(select(WebSession).where(
                WebSession.token_hash == identity.token_hash(token))).one()
            row.full_signin_at = identity.wall_clock() - timedelta(minutes=20)
        client.cookies.set("qip_session", token)
        assert client.get(f"/plans/{SAFEGUARDING}").status_code == 200
        stale = client.get(FORM)
        assert stale.status_code == 303
        assert stale.headers["location"] == (
            f"/sign-in?next=%2Fplans%2F{SAFEGUARDING}%2Fsign-off%2Fclosure&again=1")


def test_a_guest_reads_but_signs_nothing(shared: Runtime) -> None:
    with app_client(shared) as client:
        signed_in(client, shared, GUEST)
        page = client.get(f"/plans/{SAFEGUARDING}")
        assert page.status_code == 200 and "Sign off closure" not in page.text
        refused = client.get(FORM)
        assert refused.status_code == 403 and "read-only guest" in refused.text
        assert client.get(f"/plans/{MEDICATION}").status_code == 403


def test_sign_offs_the_state_does_not_offer_are_refused(shared: Runtime) -> None:
    with app_client(shared) as client:
        signed_in(client, shared, "dadeyemi")
        answer = client.get(f"/plans/{SAFEGUARDING}/sign-off/approval")
        assert answer.status_code == 409 and "given when the plan is draft" in answer.text
        assert client.get(f"/plans/{SAFEGUARDING}/sign-off/nonsense").status_code == 400
        draft = client.get(f"/plans/{MEDICATION}")
        assert "Approve the plan" in draft.text  # the sponsor of a draft plan


def test_the_portfolio_filters_by_get_form_and_keeps_what_was_chosen(shared: Runtime) -> None:
    with app_client(shared) as client:
        signed_in(client, shared, LEAD)
        every = client.get("/plans")
        assert every.status_code == 200 and "4 plans you can see" in main_text(every.text)
        one = client.get("/plans", params={"service": "willow-lodge", "state": "closure_review"})
        assert one.status_code == 200
        assert re.findall(r'href="/plans/(QIP-[^"]+)"', one.text) == [SAFEGUARDING]
        assert '<option value="willow-lodge" selected>' in one.text
        assert '<option value="closure_review" selected>' in one.text
        bad = client.get("/plans", params={"rag": "<purple>", "theme": "safeguarding"})
        assert bad.status_code == 400
        assert 'href="#rag">Choose a RAG rating from the list' in bad.text
        assert 'id="rag-error1"' in bad.text
        assert '<option value="&lt;purple&gt;" selected>&lt;purple&gt;</option>' in bad.text
        assert re.findall(r'href="/plans/(QIP-[^"]+)"', bad.text) == [SAFEGUARDING]  # theme kept
        assert 'href="/reports/board"' in every.text and 'href="/reports/commissioner"' in every.text


def test_each_person_sees_their_plans_and_the_packs_of_their_scope(shared: Runtime) -> None:
    with app_client(shared) as client:
        signed_in(client, shared, "lokafor")
        mine = re.findall(r'href="/plans/(QIP-[^"]+)"', client.get("/plans").text)
        assert mine == [SAFEGUARDING]
        assert "/reports/" not in client.get("/plans").text
        assert client.get("/reports/board").status_code == 403
        signed_in(client, shared, GUEST)
        guest = client.get("/plans")
        assert re.findall(r'href="/plans/(QIP-[^"]+)"', guest.text) == [SAFEGUARDING]
        # a guest's packs cover their one service (the policy's report_service, as the API)
        assert 'href="/reports/commissioner?service=willow-lodge"' in guest.text
        assert 'href="/reports/board?service=willow-lodge"' in guest.text
        pack = client.get("/reports/commissioner?service=willow-lodge")
        assert pack.status_code == 200 and "Willow Lodge" in pack.text
        assert "script-src" not in pack.headers["content-security-policy"]
        assert "sandbox" in pack.headers["content-security-policy"]
        refused = client.get("/reports/commissioner?service=maple-house")
        assert refused.status_code == 403 and "covers willow-lodge" in refused.text
        board = client.get("/reports/board")  # their only service, without naming it
        assert board.status_code == 200 and "Willow Lodge" in board.text
        assert "Maple House" not in board.text
        signed_in(client, shared, "hwright")  # the board's chair: the board pack, every service
        board = client.get("/reports/board")
        assert board.status_code == 200 and "Board pack" in board.text
        assert client.get("/reports/board?period=nonsense").status_code == 400
        assert client.get("/reports/nothing").status_code == 403


def test_the_rules_page_shows_the_published_version_descriptions_and_examples(
        shared: Runtime) -> None:
    with app_client(shared) as client:
        page = signed_in(client, shared, "mjones").get("/rules")
        assert page.status_code == 200
        text = main_text(page.text)
        assert shared.rules.version in text and "Published" in text
        assert "closure.signoff-group" in text
        assert "The person signing closure belongs to the group the criteria name" in text
        assert "Examples (" in text and "fires" in text


HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>{{ 7*7 }}{% raw %}"


def test_hostile_text_in_every_field_stays_inert(fresh: Runtime) -> None:
    """Script, HTML and Jinja typed into every text the plan pages show (the plan, its
    findings, actions, indicators, evidence, people, a sign-off record, a history note) come
    back as text, never as markup or a template."""
    with fresh.db.write(gated=False) as session:
        plan = session.get(Plan, SAFEGUARDING)
        assert plan is not None
        plan.title = f"Plan {HOSTILE}"
        plan.source_reference = f"Ref {HOSTILE}"
        plan.theme = f"theme {HOSTILE}"
        for finding in session.exec(select(Finding).where(Finding.plan_id == SAFEGUARDING)):
            finding.description = f"Finding {HOSTILE}"
            finding.root_causes = [f"Cause {HOSTILE}"]
        for row in session.exec(select(Indicator).where(Indicator.plan_id == SAFEGUARDING)):
            row.name = f"Indicator {HOSTILE}"
        for row in session.exec(select(Evidence).where(Evidence.plan_id == SAFEGUARDING)):
            row.description = f"Evidence {HOSTILE}"
        person = session.get(Person, "tbrennan")
        assert person is not None
        person.name = f"Tom {HOSTILE}"
    from qip_flow.services import lifecycle

    lifecycle.fire_event(fresh, SAFEGUARDING, "send_back", by="lokafor", reason=f"Why {HOSTILE}")
    lifecycle.fire_event(fresh, SAFEGUARDING, "request_closure", by="tbrennan")
    evidence = plan_evidence(fresh, SAFEGUARDING)
    with app_client(fresh) as client:
        signed_in(client, fresh, "lokafor")
        typed = post(client, FORM, closure_form(evidence, meeting=f"M {HOSTILE}",
                                                residual_risks="no separator " + HOSTILE))
        assert typed.status_code == 400
        pages = [typed.text]
        done = post(client, FORM, closure_form(
            evidence, meeting=f"M {HOSTILE}", residual_risks=f"Risk {HOSTILE} :: {HOSTILE}",
            learning_embedded=f"Learning {HOSTILE}", evidence_notes=f"Note {HOSTILE}"))
        assert done.status_code == 303, main_text(done.text)
        pages += [client.get(f"/plans/{SAFEGUARDING}").text, client.get("/plans").text,
                  client.get(f"/plans?theme={HOSTILE}").text]
        signed_in(client, fresh, LEAD)
        pages.append(client.get("/reports/board").text)
    for page in pages:
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "{{ 7*7 }}" in html.unescape(page) or "{{ 7*7 }}" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1]
    for words in ("Plan <script>", "Finding <script>", "Cause <script>", "Indicator <script>",
                  "Evidence <script>", "Tom <script>", "Why <script>", "M <script>",
                  "Risk <script>", "Learning <script>"):
        assert words in main_text(pages[1]), words
    with fresh.db.read() as session:
        assert session.get(Plan, SAFEGUARDING).state == "closed"  # type: ignore[union-attr]
        assert session.exec(select(SignOff).where(col(SignOff.purpose) == "closure")).one() \
            .meeting_reference == f"M {HOSTILE}"


def test_the_sponsor_approves_a_draft_as_himself(fresh: Runtime) -> None:
    with app_client(fresh) as client:
        signed_in(client, fresh, "dadeyemi", "email-link")
        form = client.get(f"/plans/{MEDICATION}/sign-off/approval")
        assert form.status_code == 200 and "Approve the plan" in form.text
        assert 'name="residual_risks"' not in form.text  # approval records no closure parts
        done = post(client, f"/plans/{MEDICATION}/sign-off/approval",
                    {"meeting": "Quality committee 2026-07-28", "note": "Approved as written"})
        assert done.status_code == 303
    with fresh.db.read() as session:
        plan = session.get(Plan, MEDICATION)
        assert plan is not None and plan.state == "approved"
        approve = session.exec(select(AuditEvent).where(AuditEvent.entity_id == MEDICATION,
                                                        AuditEvent.what == "approve")).one()
    assert approve.actor == "dadeyemi"
    assert approve.detail["via"] == {"door": "web", "signin": "email-link"}


def test_a_variation_below_the_published_minimums_is_refused_beside_the_change(
        fresh: Runtime) -> None:
    path = f"/plans/{SAFEGUARDING}/sign-off/variation"
    with app_client(fresh) as client:
        signed_in(client, fresh, "lokafor")
        before = unchanged(fresh.db)
        empty = post(client, path, {"reason": ""})
        assert empty.status_code == 400 and unchanged(fresh.db) == before
        assert 'href="#reason">Enter why the closure criteria change' in empty.text
        assert 'href="#changes">Change at least one criterion' in empty.text
        low = post(client, path, {"reason": "Shorter is enough", "sustain_days": "30",
                                  "reaudits": "many"})
        assert low.status_code == 400 and unchanged(fresh.db) == before
        assert 'href="#reaudits">' in low.text and 'value="many"' in low.text
        below = post(client, path, {"reason": "Shorter is enough", "sustain_days": "30"})
        assert below.status_code == 409 and unchanged(fresh.db) == before
        assert "minimum of 90" in main_text(below.text) and 'href="#changes"' in below.text
        raised = post(client, path, {"reason": "Sustain through the winter",
                                     "sustain_days": "120"})
        assert raised.status_code == 303
    with fresh.db.read() as session:
        plan = session.get(Plan, SAFEGUARDING)
        assert plan is not None and (plan.closure_criteria or {})["sustain_days"] == 120
