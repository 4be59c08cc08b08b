"""The governance reports (the board pack, a plan's closure report) as HTML, PDF or their data
as JSON, and the whole record as the inspector's export (a zip of CSV files and one JSON)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from qip_flow.runtime import Runtime
from qip_flow.services import catalogue
from qip_flow.services.policy import Act, Actor
from qip_flow.web.api.deps import caller, runtime
from qip_flow.web.api.problems import documented

router = APIRouter(tags=["reports"])
Format = Query("json", description="json (the report's data), html or pdf")
_CONTENT = {"application/json": {"schema": {"type": "object"}},
            "text/html": {"schema": {"type": "string"}},
            "application/pdf": {"schema": {"type": "string", "format": "binary"}}}

ROUTE_POLICY: dict[tuple[str, str], str] = {
    ("GET", "/reports/board"): Act.RUN_REPORTS.value,
    ("GET", "/plans/{plan_id}/report"): Act.RUN_REPORTS.value,
    ("GET", "/export"): Act.EXPORT.value,
}


def _answer(kind: str, data: object, fmt: str, name: str) -> Response:
    body, media = catalogue.report_as(kind, data, fmt)
    headers = {"content-disposition": f'attachment; filename="{name}.pdf"'} if fmt == "pdf" else {}
    return Response(body, media_type=media, headers=headers)


@router.get("/reports/board", responses={200: {"content": _CONTENT, "description": "The pack"},
                                         **documented()}, summary="The board pack")
def board_pack(period: str | None = Query(None, max_length=40, description="e.g. 2026-Q1, "
                                          "2026-03, FY2026, 2026-01-01..2026-03-31"),
               service: str | None = Query(None, max_length=64),
               format: Literal["json", "html", "pdf"] = Format,
               rt: Runtime = Depends(runtime), actor: Actor = Depends(caller)) -> Response:
    """The portfolio by service, source, theme and state; RAG and its trend; slipped actions;
    escalations; closure; charts. A guest's or a token's pack covers only their services."""
    data = catalogue.report(rt, actor, "board", period=period, service=service)
    return _answer("board", data, format, "board-pack")


@router.get("/plans/{plan_id}/report", responses={200: {"content": _CONTENT,
                                                        "description": "The report"},
                                                  **documented()},
            summary="A plan's closure report")
def closure_report(plan_id: str, format: Literal["json", "html", "pdf"] = Format,
                   rt: Runtime = Depends(runtime), actor: Actor = Depends(caller)) -> Response:
    """Findings, actions and evidence, indicator charts, every closure criterion, residual
    risks, learning and sign-offs."""
    data = catalogue.report(rt, actor, "plan", plan_id=plan_id)
    return _answer("plan", data, format, plan_id)


@router.get("/export", responses={200: {"content": {"application/zip": {"schema": {
    "type": "string", "format": "binary"}}}, "description": "The export (zip)"}, **documented()},
            summary="Export the whole record")
def export(rt: Runtime = Depends(runtime), actor: Actor = Depends(caller)) -> FileResponse:
    """Every table as CSV and one JSON file, with the audit chain checked (`qip export`)."""
    folder = Path(tempfile.mkdtemp(prefix="qip-export-"))
    try:
        out = catalogue.export_zip(rt, actor, folder)
    except BaseException:
        _remove(folder)
        raise
    return FileResponse(out, media_type="application/zip", filename="qip-export.zip",
                        background=BackgroundTask(_remove, folder))


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
