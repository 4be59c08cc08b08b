"""The action page and its forms, and the evidence files it links to.

Each form's route parses what was sent, asks the policy whether this person may do it (a
refusal is a 403 page saying why and who can, and an audit event), calls one service as the
signed-in person through the web door, and answers with a redirect to the page and a success
banner (post/redirect/get). A form that is invalid, or that a service or a workflow guard
refuses, is shown again with each reason beside its field and what was typed kept; nothing is
changed. Approvals, verifications and reassignments need a recent full sign-in."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from qip_flow.errors import InvalidInput, QipError, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import actions, evidence, identity, lifecycle, pages
from qip_flow.services.identity import SignIn, item_path
from qip_flow.services.policy import Act, Permission
from qip_flow.store.evidence_files import TooLarge, in_words
from qip_flow.web import deps

router = APIRouter()

ACTION = "/actions/{plan_id}/{ref}"
EVIDENCE_FILE = "/evidence/{evidence_id}"

#: every route here and the question it asks the policy (the permission test reads it)
ROUTE_POLICY: dict[tuple[str, str], str] = {
    ("GET", ACTION): Act.VIEW.value,
    ("POST", f"{ACTION}/progress"): Act.RECORD_PROGRESS.value,
    ("POST", f"{ACTION}/evidence"): Act.ADD_EVIDENCE.value,
    ("POST", f"{ACTION}/complete"): Act.COMPLETE.value,
    ("POST", f"{ACTION}/new-date"): Act.REQUEST_NEW_DATE.value,
    ("POST", f"{ACTION}/acknowledge"): Act.ACKNOWLEDGE.value,
    ("POST", f"{ACTION}/new-date/{{request_id}}"): Act.DECIDE_NEW_DATE.value,
    ("POST", f"{ACTION}/verify"): Act.VERIFY.value,
    ("POST", f"{ACTION}/reassign"): Act.REASSIGN.value,
    ("GET", EVIDENCE_FILE): Act.VIEW.value,
}

#: the banner after each form (chosen by a fixed word in the address, never text sent back)
DONE = {
    "progress": "Your progress note is recorded.",
    "evidence": "The evidence is added to the action.",
    "complete": "The action is marked complete. Someone other than you will verify it.",
    "new-date": "Your request for a new date is sent. The owner's line manager, the plan's "
                "accountable owner or its sponsor will decide it.",
    "approved": "The new date is approved and is now the action's due date.",
    "refused": "The new date is refused. The owner can see your reason on this page.",
    "acknowledged": "Your acknowledgement is recorded.",
    "verified": "The action is verified.",
    "reassigned": "The action has a new owner.",
}

#: what each form's fields are called by the services' messages (``field: reason``)
FIELDS: dict[str, dict[str, str]] = {
    "progress": {"note": "progress-note"},
    "evidence": {"description": "evidence-description", "file": "evidence-file"},
    "complete": {"description": "complete-description", "file": "complete-file",
                 "note": "complete-note"},
    "new-date": {"new_due": "new-date-day", "reason": "new-date-reason"},
    "acknowledge": {},
    "decide": {"decision": "decide-approve", "reason": "decide-reason"},
    "verify": {"note": "verify-note"},
    "reassign": {"new_owner": "reassign-owner", "reason": "reassign-reason"},
}
#: the field a refusal is shown beside when it names none
MAIN_FIELD = {"progress": "progress-note", "evidence": "evidence-file",
              "complete": "complete-file", "new-date": "new-date-day",
              "acknowledge": "acknowledge-button", "decide": "decide-approve",
              "verify": "verify-button", "reassign": "reassign-owner"}
MAX_NOTE = 5000


def _id(plan_id: str, ref: str) -> str:
    return f"{plan_id}/{ref}"


def page(request: Request, signin: SignIn, action_id: str, *, done: str | None = None,
         form: str | None = None, errors: dict[str, str] | None = None,
         values: dict[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
    data = pages.action_page(deps.runtime(request), deps.actor(request, signin), action_id)
    return deps.render(request, "action.html.j2", {
        "title": f"Action {data['ref']}: {data['description']}"[:120], "a": data,
        "upload_limit": in_words(request.app.state.upload_limit),
        "done": DONE.get(done or ""), "form": form, "errors": errors or {},
        "values": values or {}}, status_code=status_code)


def forbidden(request: Request, signin: SignIn, permission: Permission,
              back: str | None = None) -> HTMLResponse:
    """The 403 page: what was refused, why, and who can; recorded in the audit trail."""
    identity.record_refusal(deps.runtime(request), person_id=signin.person.id,
                            what="request refused", path=request.url.path,
                            reason=f"{permission.act.value}: {permission.explain()}")
    return deps.render(request, "refused.html.j2", {
        "title": "You cannot do this", "act": permission.act.value, "reason": permission.reason,
        "who_can": list(permission.who_can), "back": back}, status_code=403)


def _message(exc: QipError) -> str:
    text = exc.message
    if exc.details:
        text = f"{text.rstrip('.')}: {'; '.join(exc.details)}"
    return text[:1].upper() + text[1:]


def _field_of(form: str, exc: QipError) -> tuple[str, str]:
    """The form field a service's message names (``reason: …``), and the message without it."""
    name, sep, rest = exc.message.partition(": ")
    field = FIELDS[form].get(name.strip().removeprefix("--")) if sep else None
    if field is not None:
        shown = _message(QipError(rest, details=exc.details))
        return field, shown
    return MAIN_FIELD[form], _message(exc)


def act(request: Request, signin: SignIn, action_id: str, what: Act, form: str, *,
        call: Callable[[Runtime], Any], done: str | Callable[[Any], str],
        values: dict[str, str], errors: dict[str, str] | None = None,
        request_id: int | None = None) -> Response:
    """Policy, then the form's own errors, then one service; then back to the page."""
    rt = deps.runtime(request)
    permission = pages.permission(rt, deps.actor(request, signin), what, action_id,
                                  request_id=request_id)
    if not permission:
        return forbidden(request, signin, permission, back=item_path(action_id))
    if errors:
        return page(request, signin, action_id, form=form, errors=errors, values=values,
                    status_code=400)
    try:
        result = call(rt)
    except TooLarge as exc:
        return page(request, signin, action_id, form=form, values=values, status_code=413,
                    errors={FIELDS[form].get("file", MAIN_FIELD[form]): _message(exc)})
    except (InvalidInput, Refused) as exc:
        field, shown = _field_of(form, exc)
        return page(request, signin, action_id, form=form, values=values, errors={field: shown},
                    status_code=400 if isinstance(exc, InvalidInput) else 409)
    word = done(result) if callable(done) else done
    return RedirectResponse(f"{item_path(action_id)}?done={word}", status_code=303)


def _short(errors: dict[str, str], field: str, value: str) -> str:
    """Optional text, at most ``MAX_NOTE`` characters."""
    text = value.strip()
    if len(text) > MAX_NOTE:
        errors[field] = f"Keep it to {MAX_NOTE:,} characters (it has {len(text):,})"
    return text


def _text(errors: dict[str, str], field: str, value: str, missing: str) -> str:
    """Text that must be given."""
    if not value.strip():
        errors[field] = missing
    return _short(errors, field, value)


# --- the page --------------------------------------------------------------------------------


@router.get(ACTION, response_class=HTMLResponse)
def action_page(request: Request, plan_id: str, ref: str, done: str | None = None,
                signin: SignIn = Depends(deps.signed_in)) -> Response:
    action_id = _id(plan_id, ref)
    permission = pages.permission(deps.runtime(request), deps.actor(request, signin), Act.VIEW,
                                  action_id)
    if not permission:
        return forbidden(request, signin, permission)
    return page(request, signin, action_id, done=done)


# --- the owner's forms -----------------------------------------------------------------------


@router.post(f"{ACTION}/progress")
def record_progress(request: Request, plan_id: str, ref: str, note: str = Form(""),
                    signin: SignIn = Depends(deps.signed_in)) -> Response:
    action_id, errors = _id(plan_id, ref), {}
    text = _text(errors, "progress-note", note, "Enter what has been done since the last note")
    return act(request, signin, action_id, Act.RECORD_PROGRESS, "progress",
               values={"progress-note": note}, errors=errors, done="progress",
               call=lambda rt: actions.record_progress(rt, action_id, by=signin.person.id,
                                                       note=text, via=deps.via(signin)))


def _upload(errors: dict[str, str], field: str, file: UploadFile | None, needed: bool) -> None:
    if file is None and needed:
        errors[field] = "Choose the file that shows the evidence"


@router.post(f"{ACTION}/evidence")
def add_evidence(request: Request, plan_id: str, ref: str, description: str = Form(""),
                 file: UploadFile | None = File(None),
                 signin: SignIn = Depends(deps.signed_in)) -> Response:
    action_id, errors = _id(plan_id, ref), {}
    _text(errors, "evidence-description", description,
          "Say what the file shows, for example 'MAR audit, week 12'")
    _upload(errors, "evidence-file", file, needed=True)
    return act(request, signin, action_id, Act.ADD_EVIDENCE, "evidence",
               values={"evidence-description": description}, errors=errors, done="evidence",
               call=lambda rt: evidence.add_file(
                   rt, action_id, by=signin.person.id, source=file.file,  # type: ignore[union-attr]
                   filename=file.filename or "", description=description,  # type: ignore[union-attr]
                   via=deps.via(signin)))


@router.post(f"{ACTION}/complete")
def complete(request: Request, plan_id: str, ref: str, description: str = Form(""),
             note: str = Form(""), file: UploadFile | None = File(None),
             signin: SignIn = Depends(deps.signed_in)) -> Response:
    """Done: with a file as its evidence, or on the evidence already recorded (the workflow's
    guard says whether there is any)."""
    action_id, errors = _id(plan_id, ref), {}
    if file is not None:
        _text(errors, "complete-description", description,
              "Say what the file shows, for example 'Training records, all 14 staff'")
    _short(errors, "complete-note", note)
    values = {"complete-description": description, "complete-note": note}

    def call(rt: Runtime) -> Any:
        if file is not None:
            return evidence.add_file(rt, action_id, by=signin.person.id, source=file.file,
                                     filename=file.filename or "", description=description,
                                     event="complete", note=note.strip() or None,
                                     via=deps.via(signin))
        return lifecycle.fire_event(rt, action_id, "complete", by=signin.person.id,
                                    note=note.strip() or None, via=deps.via(signin))

    return act(request, signin, action_id, Act.COMPLETE, "complete", values=values,
               errors=errors, done="complete", call=call)


def _date(errors: dict[str, str], field: str, day: str, month: str, year: str) -> date | None:
    parts = (day.strip(), month.strip(), year.strip())
    if not any(parts):
        errors[field] = "Enter the new due date"
        return None
    if not all(p.isdigit() for p in parts) or len(parts[2]) != 4:
        errors[field] = "Enter the new due date as day, month and year, for example 27 3 2026"
        return None
    try:
        return date(int(parts[2]), int(parts[1]), int(parts[0]))
    except ValueError:
        errors[field] = "Enter a real date, for example 27 3 2026"
        return None


@router.post(f"{ACTION}/new-date")
def ask_for_new_date(request: Request, plan_id: str, ref: str, day: str = Form(""),
                     month: str = Form(""), year: str = Form(""), reason: str = Form(""),
                     signin: SignIn = Depends(deps.signed_in)) -> Response:
    action_id, errors = _id(plan_id, ref), {}
    new_due = _date(errors, "new-date-day", day, month, year)
    text = _text(errors, "new-date-reason", reason, "Say why the action needs a new date")
    values = {"new-date-day": day, "new-date-month": month, "new-date-year": year,
              "new-date-reason": reason}
    return act(request, signin, action_id, Act.REQUEST_NEW_DATE, "new-date", values=values,
               errors=errors, done="new-date",
               call=lambda rt: actions.request_new_date(
                   rt, action_id, by=signin.person.id, new_due=new_due,  # type: ignore[arg-type]
                   reason=text, via=deps.via(signin)))


@router.post(f"{ACTION}/acknowledge")
def acknowledge(request: Request, plan_id: str, ref: str,
                signin: SignIn = Depends(deps.signed_in)) -> Response:
    action_id = _id(plan_id, ref)
    return act(request, signin, action_id, Act.ACKNOWLEDGE, "acknowledge", values={},
               done="acknowledged",
               call=lambda rt: actions.acknowledge(rt, action_id, by=signin.person.id,
                                                   via=deps.via(signin)))


# --- the deciders' forms (a recent full sign-in) ---------------------------------------------


def _version(errors: dict[str, str], field: str, version: str) -> int | None:
    if not version.strip():
        return None
    if not version.strip().isdigit():
        errors[field] = "This form is damaged: reload the page and try again"
        return None
    return int(version)


@router.post(f"{ACTION}/new-date/{{request_id}}")
def decide_new_date(request: Request, plan_id: str, ref: str, request_id: int,
                    decision: str = Form(""), reason: str = Form(""),
                    signin: SignIn = Depends(deps.require_recent_full_signin)) -> Response:
    action_id, errors = _id(plan_id, ref), {}
    if decision not in ("approve", "refuse"):
        errors["decide-approve"] = "Choose whether to approve or refuse the new date"
    elif decision == "refuse":
        _text(errors, "decide-reason", reason, "Say why the new date is refused, so the owner "
              "knows what to do next")
    _short(errors, "decide-reason", reason)
    values = {"decision": decision, "decide-reason": reason}
    return act(request, signin, action_id, Act.DECIDE_NEW_DATE, "decide", values=values,
               errors=errors, request_id=request_id,
               done=lambda row: "approved" if row.state == "approved" else "refused",
               call=lambda rt: actions.decide_new_date(
                   rt, request_id, by=signin.person.id, approve=decision == "approve",
                   reason=reason, via=deps.via(signin)))


@router.post(f"{ACTION}/verify")
def verify(request: Request, plan_id: str, ref: str, note: str = Form(""),
           version: str = Form(""),
           signin: SignIn = Depends(deps.require_recent_full_signin)) -> Response:
    action_id, errors = _id(plan_id, ref), {}
    _short(errors, "verify-note", note)
    expected = _version(errors, "verify-note", version)
    return act(request, signin, action_id, Act.VERIFY, "verify", values={"verify-note": note},
               errors=errors, done="verified",
               call=lambda rt: lifecycle.fire_event(
                   rt, action_id, "verify", by=signin.person.id, note=note.strip() or None,
                   expected_version=expected, via=deps.via(signin)))


@router.post(f"{ACTION}/reassign")
def reassign(request: Request, plan_id: str, ref: str, new_owner: str = Form(""),
             reason: str = Form(""),
             signin: SignIn = Depends(deps.require_recent_full_signin)) -> Response:
    action_id, errors = _id(plan_id, ref), {}
    if not new_owner.strip():
        errors["reassign-owner"] = "Choose who will own the action"
    text = _text(errors, "reassign-reason", reason, "Say why the action changes hands")
    values = {"reassign-owner": new_owner, "reassign-reason": reason}
    return act(request, signin, action_id, Act.REASSIGN, "reassign", values=values,
               errors=errors, done="reassigned",
               call=lambda rt: actions.reassign(rt, action_id, by=signin.person.id,
                                                new_owner=new_owner.strip(), reason=text,
                                                via=deps.via(signin)))


# --- evidence files --------------------------------------------------------------------------


@router.get(EVIDENCE_FILE)
def download(request: Request, evidence_id: int,
             signin: SignIn = Depends(deps.signed_in)) -> Response:
    """A stored file, only to people who may see its plan, always as an attachment (never
    shown in the page), of the type its content showed when it was uploaded."""
    rt = deps.runtime(request)
    permission = evidence.permission(rt, deps.actor(request, signin), evidence_id)
    if not permission:
        return forbidden(request, signin, permission)
    found = evidence.file_for(rt, evidence_id)
    media_type = found.media_type + ("; charset=utf-8" if found.media_type.startswith("text/")
                                     else "")
    return FileResponse(found.path, media_type=media_type, headers={
        "Content-Disposition": f"attachment; filename=\"{found.filename}\"; "
                               f"filename*=UTF-8''{quote(found.filename)}",
        "Content-Security-Policy": "sandbox; default-src 'none'"})
