"""``qip export``: the whole record and the audit trail for an inspector — one CSV per table
and one JSON file, into a new folder or a zip file. Rows are streamed in batches, so the export
of a large database never holds a table in memory; the audit chain is verified as part of it,
and the result is written into the export itself."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Table, select
from sqlmodel import Session, SQLModel

from qip_flow import __version__
from qip_flow.errors import InvalidInput
from qip_flow.runtime import Runtime
from qip_flow.store import audit
from qip_flow.store.models import AuditHead

FORMATS = ("csv", "json", "both")
JSON_FILE = "qip-export.json"
BATCH = 5000


@dataclass
class ExportResult:
    out: Path
    files: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    chain_ok: bool = True
    chain_problem: str = ""
    audit_events: int = 0
    audit_hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "files": self.files, "rows": self.rows,
                "audit": {"events": self.audit_events, "last_hash": self.audit_hash,
                          "chain_intact": self.chain_ok, "problem": self.chain_problem}}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return _plain(value)


class _Target:
    """Files opened for writing in a new folder or inside a zip file."""

    def __init__(self, out: Path, now: datetime) -> None:
        self.out, self.now = out, now
        self.zip: zipfile.ZipFile | None = None
        if out.suffix.lower() == ".zip":
            if out.exists():
                raise InvalidInput(f"--out: {out} already exists; name a new zip file")
            if not out.parent.is_dir():
                raise InvalidInput(f"--out: the folder {out.parent} does not exist")
            self.zip = zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED)
        else:
            if out.exists() and (not out.is_dir() or any(out.iterdir())):
                raise InvalidInput(f"--out: {out} already exists and is not an empty folder; "
                                   "name a new folder or a .zip file")
            out.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[str]]:
        if self.zip is not None:
            entry = zipfile.ZipInfo(name, date_time=self.now.timetuple()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            with self.zip.open(entry, "w") as raw, io.TextIOWrapper(
                    raw, encoding="utf-8", newline="") as text:
                yield text
        else:
            with (self.out / name).open("w", encoding="utf-8", newline="") as text:
                yield text

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _rows(session: Session, table: Table) -> Iterator[dict[str, Any]]:
    """A table's rows in primary-key order, fetched in batches."""
    order = list(table.primary_key.columns)
    result = session.connection().execution_options(yield_per=BATCH).execute(
        select(table).order_by(*order))
    for row in result.mappings():
        yield dict(row)


def export(rt: Runtime, out: Path, fmt: str = "both") -> ExportResult:
    """Write every table (and the audit trail, which is one of them) as CSV and/or JSON."""
    if fmt not in FORMATS:
        raise InvalidInput(f"--format: '{fmt}' is not an export format; use csv, json or both")
    tables = list(SQLModel.metadata.sorted_tables)
    result = ExportResult(out)
    with rt.db.read() as session:
        check = audit.verify(session)
        head = session.get(AuditHead, 1)
        result.chain_ok, result.chain_problem = check.ok, check.problem
        result.audit_events = head.seq if head else 0
        result.audit_hash = head.hash if head else audit.GENESIS
        target = _Target(out, rt.clock.now())
        try:
            if fmt in ("csv", "both"):
                for table in tables:
                    name = f"{table.name}.csv"
                    with target.open(name) as handle:
                        writer = csv.writer(handle)
                        writer.writerow([c.name for c in table.columns])
                        count = 0
                        for row in _rows(session, table):
                            writer.writerow([_csv_value(row[c.name]) for c in table.columns])
                            count += 1
                    result.files.append(name)
                    result.rows[table.name] = count
            if fmt in ("json", "both"):
                with target.open(JSON_FILE) as handle:
                    _write_json(handle, session, tables, rt, result)
                result.files.append(JSON_FILE)
        finally:
            target.close()
    return result


def _write_json(handle: IO[str], session: Session, tables: list[Table], rt: Runtime,
                result: ExportResult) -> None:
    """One JSON object: what the export is, then every table as a list of rows, written row
    by row."""
    about = {"exported_at": rt.clock.now().isoformat(), "qip_flow": __version__,
             "rules_version": rt.rules.version,
             "audit": {"events": result.audit_events, "last_hash": result.audit_hash,
                       "chain_intact": result.chain_ok, "problem": result.chain_problem}}
    handle.write('{"export": ' + json.dumps(about, ensure_ascii=False) + ',\n "tables": {')
    for i, table in enumerate(tables):
        handle.write(("," if i else "") + f"\n  {json.dumps(table.name)}: [")
        count = 0
        for row in _rows(session, table):
            handle.write(("," if count else "") + "\n   " + json.dumps(
                {k: _plain(v) for k, v in row.items()}, ensure_ascii=False, default=str))
            count += 1
        handle.write("\n  ]")
        result.rows.setdefault(table.name, count)
    handle.write("\n }\n}\n")
