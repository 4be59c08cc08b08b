"""Measurements pushed by other systems: one, a batch, or a sheet (CSV or XLSX). All are
checked before any is recorded; each carries an idempotency key, so a retried push records
nothing twice (a sheet's rows are keyed by the sheet's content and their row numbers, or by the
``Idempotency-Key`` header and their row numbers)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from qip_flow.errors import InvalidRows
from qip_flow.runtime import Runtime
from qip_flow.services import measurements
from qip_flow.services.measurements import XLSX, Push
from qip_flow.services.policy import Act, Actor
from qip_flow.web.api import models
from qip_flow.web.api.deps import caller, runtime
from qip_flow.web.api.problems import Malformed, documented, validation_items

router = APIRouter(tags=["measurements"])

ROUTE_POLICY: dict[tuple[str, str], str] = {
    ("POST", "/measurements"): Act.RECORD_MEASUREMENT.value,
}

_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"oneOf": [
            {"$ref": "#/components/schemas/MeasurementIn"},
            {"$ref": "#/components/schemas/MeasurementBatch"}]}},
        "text/csv": {"schema": {"type": "string", "description": "A header row naming "
                                "indicator, date, value and optionally reaudit, source, "
                                "reason, idempotency_key, plan"}},
        XLSX: {"schema": {"type": "string", "format": "binary", "description": "The first "
                          "worksheet, with the same columns as the CSV"}},
    },
}


def _pushes(body: dict[str, Any], header_key: str | None) -> list[Push]:
    try:
        if isinstance(body, dict) and "measurements" in body:
            items = models.MeasurementBatch.model_validate(body).measurements
            where = [f"measurements[{i}]" for i in range(len(items))]
        else:
            items = [models.MeasurementIn.model_validate(body)]
            where = ["measurement"]
            if header_key and not items[0].idempotency_key:
                items[0].idempotency_key = header_key
    except ValidationError as exc:
        problems = [(item["path"] or "body", item["detail"])
                    for item in validation_items(list(exc.errors()))]
        raise InvalidRows("the measurements are not valid: see `errors`", problems) from None
    missing = [(f"{w}.idempotency_key", "give each measurement its own idempotency key (or the "
                "Idempotency-Key header for one measurement): a retried push is then recorded "
                "once") for w, item in zip(where, items, strict=True) if not item.idempotency_key]
    if missing:
        raise InvalidRows("every measurement needs an idempotency key", missing)
    return [Push(indicator=i.indicator, value=i.value, on=i.date, reaudit=i.reaudit,
                 source=i.source, reason=i.reason, key=i.idempotency_key, where=w)
            for i, w in zip(items, where, strict=True)]


@router.post("/measurements", status_code=201, response_model=models.MeasurementsOut,
             responses={200: {"description": "Every measurement was recorded by an earlier push "
                              "with the same key (nothing new)",
                              "content": {"application/json": {"schema": {
                                  "$ref": "#/components/schemas/MeasurementsOut"}}}},
                        **documented(409, 413, 415)},
             openapi_extra={"requestBody": _BODY}, summary="Push measurements")
async def push(request: Request, rt: Runtime = Depends(runtime), actor: Actor = Depends(caller),
               idempotency_key: str | None = Header(None, max_length=200)) -> JSONResponse:
    """One measurement (JSON), a batch (`{"measurements": [...]}`, at most 1,000), or a sheet
    (`text/csv`, or an `.xlsx` workbook). Everything is checked first: one bad item and none is
    recorded, each problem named (`measurements[3].value`, `row 5.date`). 201 when something
    was recorded; 200 when every item replays an earlier push."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if kind == "application/json" or kind.endswith("+json"):
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise Malformed("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InvalidRows("the body is not valid", [("body", "give one measurement (an "
                              "object) or {\"measurements\": [...]}")])
        pushes = _pushes(body, idempotency_key)
        outcomes = measurements.record_many(rt, actor, pushes)
    elif kind in ("text/csv", XLSX):
        sheet = measurements.read_sheet(raw, "xlsx" if kind == XLSX else "csv",
                                        key_prefix=f"header:{idempotency_key}"
                                        if idempotency_key else None)
        outcomes = measurements.record_many(rt, actor, sheet.pushes, found=sheet.problems,
                                            most=measurements.MAX_SHEET_ROWS)
    else:
        from starlette.exceptions import HTTPException

        raise HTTPException(415, f"content-type '{kind or 'none'}': send application/json, "
                                 f"text/csv or {XLSX}")
    replayed = sum(1 for o in outcomes if o.replayed)
    recorded = len({o.measurement.id for o in outcomes if not o.replayed})
    return JSONResponse({"recorded": recorded, "replayed": replayed,
                         "measurements": [o.as_dict() for o in outcomes]},
                        status_code=201 if recorded else 200)
