"""An action's owner answering: progress, evidence (a multipart upload), completion, a new
date asked for. People only (a browser session with its form token): a token's service account
is never an action's owner. ``expected_version`` makes a change conditional: 409 if the plan
changed since."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse

from qip_flow.runtime import Runtime
from qip_flow.services import acting, evidence
from qip_flow.services.lifecycle import EventResult
from qip_flow.services.policy import Act, Actor
from qip_flow.web.api import models
from qip_flow.web.api.deps import caller, runtime
from qip_flow.web.api.problems import documented

router = APIRouter(tags=["actions"])
BASE = "/plans/{plan_id}/actions/{ref}"

ROUTE_POLICY: dict[tuple[str, str], str] = {
    ("POST", f"{BASE}/progress"): Act.RECORD_PROGRESS.value,
    ("POST", f"{BASE}/evidence"): Act.ADD_EVIDENCE.value,
    ("POST", f"{BASE}/complete"): Act.COMPLETE.value,
    ("POST", f"{BASE}/date-requests"): Act.REQUEST_NEW_DATE.value,
}


def _moved(rt: Runtime, result: EventResult) -> JSONResponse:
    from qip_flow.services.lifecycle import get_plan

    with rt.db.read() as session:
        version = get_plan(session, result.entity_id.partition("/")[0]).version
    return JSONResponse({"id": result.entity_id, "event": result.move.event.name,
                         "source": result.move.source, "to": result.move.dest,
                         "version": version}, status_code=201)


@router.post(f"{BASE}/progress", status_code=201, response_model=models.EventOut,
             responses=documented(409), summary="Record progress on an action")
def progress(plan_id: str, ref: str, body: models.ProgressIn, rt: Runtime = Depends(runtime),
             actor: Actor = Depends(caller)) -> JSONResponse:
    """A progress note from the action's owner (it stops the escalations)."""
    return _moved(rt, acting.act_on_action(rt, actor, f"{plan_id}/{ref}", Act.RECORD_PROGRESS,
                                           note=body.note,
                                           expected_version=body.expected_version))


@router.post(f"{BASE}/complete", status_code=201, response_model=models.EventOut,
             responses=documented(409), summary="Complete an action")
def complete(plan_id: str, ref: str, body: models.CompleteIn, rt: Runtime = Depends(runtime),
             actor: Actor = Depends(caller)) -> JSONResponse:
    """Done, with evidence (recorded before, or given here); someone else verifies it."""
    return _moved(rt, acting.act_on_action(rt, actor, f"{plan_id}/{ref}", Act.COMPLETE,
                                           note=body.note, evidence=body.evidence,
                                           expected_version=body.expected_version))


@router.post(f"{BASE}/date-requests", status_code=201, response_model=models.DateRequestOut,
             responses=documented(409), summary="Ask for a new due date")
def ask_for_date(plan_id: str, ref: str, body: models.DateRequestIn,
                 rt: Runtime = Depends(runtime), actor: Actor = Depends(caller)) -> JSONResponse:
    """The owner asks, with a reason; the line manager, plan owner or sponsor decides."""
    return JSONResponse(acting.request_new_date(rt, actor, f"{plan_id}/{ref}", body.new_due,
                                                body.reason,
                                                expected_version=body.expected_version),
                        status_code=201)


@router.post(f"{BASE}/evidence", status_code=201, response_model=models.EvidenceOut,
             responses=documented(413, 415), summary="Upload evidence (multipart)")
def upload_evidence(plan_id: str, ref: str, file: UploadFile = File(...),
                    description: str = Form(..., min_length=1, max_length=200),
                    rt: Runtime = Depends(runtime), actor: Actor = Depends(caller)) -> JSONResponse:
    """A file (PDF, image, office document, CSV or plain text, checked by its content) kept
    with its SHA-256 as the action's evidence."""
    return JSONResponse(evidence.add_evidence_file(rt, actor, f"{plan_id}/{ref}",
                                                   file.filename or "upload", file.file,
                                                   description=description), status_code=201)
