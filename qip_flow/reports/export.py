"""``qip export``: the whole record and the audit trail for an inspector — one CSV per table
and one JSON file, into a new folder or a zip file. Rows are streamed in batches, so the export
of a large database never holds a table in memory; the audit chain is verified as part of it,
and the result is written into the export itself. Uploaded evidence files go in ``evidence/``
(named by their evidence row's id), each checked against its SHA-256 on the way. CSV cells that
a spreadsheet would run as a formula are neutralised (a leading ``'``); the JSON file keeps
every value exactly."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
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
from qip_flow.reports import outputs
from qip_flow.runtime import Runtime
from qip_flow.store import audit
from qip_flow.store.models import AuditHead

FORMATS = ("csv", "json", "both")
JSON_FILE = "qip-export.json"
EVIDENCE_FOLDER = "evidence"
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
    missing_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "files": self.files, "rows": self.rows,
                "missing_evidence_files": self.missing_files,
                "audit": {"events": self.audit_events, "last_hash": self.audit_hash,
                          "chain_intact": self.chain_ok, "problem": self.chain_problem}}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


#: What makes a spreadsheet read a cell as a formula (OWASP's CSV injection rule).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """Text a spreadsheet will show, never run: a cell starting like a formula gets a leading
    ``'``. Numbers stored as numbers stay numbers; only text is touched."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return spreadsheet_safe(json.dumps(value, ensure_ascii=False, sort_keys=True))
    value = _plain(value)
    return spreadsheet_safe(value) if isinstance(value, str) else value


class _Target:
    """Files opened for writing in a new folder (or one holding only qip's earlier exports) or
    inside a zip file, under the rules of :mod:`.outputs`."""

    def __init__(self, out: Path, now: datetime, *, force: bool, database: Path | None) -> None:
        self.out, self.now = out, now
        self.zip: zipfile.ZipFile | None = None
        self.written: list[Path] = []
        if out.suffix.lower() == ".zip":
            outputs.check_file(out, force=force, database=database)
            self.partial = out.with_name(f".{out.name}.{os.getpid()}.tmp")
            self.zip = zipfile.ZipFile(self.partial, "w", compression=zipfile.ZIP_DEFLATED)
        else:
            outputs.check_folder(out, force=force, database=database)
            out.mkdir(exist_ok=True)

    def copy_file(self, name: str, source: Path) -> None:
        """A file copied in as it is (an evidence file), in chunks."""
        if self.zip is not None:
            entry = zipfile.ZipInfo(name, date_time=self.now.timetuple()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            with source.open("rb") as raw, self.zip.open(entry, "w") as out:
                shutil.copyfileobj(raw, out, 1 << 20)
        else:
            path = self.out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            with source.open("rb") as raw, path.open("xb") as out:
                shutil.copyfileobj(raw, out, 1 << 20)
            self.written.append(path)

    @contextmanager
    def open(self, name: str) -> Iterator[IO[str]]:
        if self.zip is not None:
            entry = zipfile.ZipInfo(name, date_time=self.now.timetuple()[:6])
            entry.compress_type = zipfile.ZIP_DEFLATED
            with self.zip.open(entry, "w") as raw, io.TextIOWrapper(
                    raw, encoding="utf-8", newline="") as text:
                yield text
        else:
            path = self.out / name
            path.unlink(missing_ok=True)  # an earlier export's file (or a link): replaced
            with path.open("x", encoding="utf-8", newline="") as text:
                yield text
            self.written.append(path)

    def close(self, *, complete: bool) -> None:
        """Finish: the zip renamed into place, or the folder's files recorded as qip's own; an
        incomplete zip is removed."""
        if self.zip is not None:
            self.zip.close()
            if complete:
                os.replace(self.partial, self.out)
                outputs.record(self.out)
            else:
                self.partial.unlink(missing_ok=True)
        else:
            outputs.record(*self.written)


def _rows(session: Session, table: Table) -> Iterator[dict[str, Any]]:
    """A table's rows in primary-key order, fetched in batches."""
    order = list(table.primary_key.columns)
    result = session.connection().execution_options(yield_per=BATCH).execute(
        select(table).order_by(*order))
    for row in result.mappings():
        yield dict(row)


def export(rt: Runtime, out: Path, fmt: str = "both", *, force: bool = False) -> ExportResult:
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
        target = _Target(out, rt.clock.now(), force=force, database=rt.db.sqlite_file())
        complete = False
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
            _copy_evidence(rt, target, result)
            if fmt in ("json", "both"):
                with target.open(JSON_FILE) as handle:
                    _write_json(handle, session, tables, rt, result)
                result.files.append(JSON_FILE)
            complete = True
        finally:
            target.close(complete=complete)
    return result


def _copy_evidence(rt: Runtime, target: _Target, result: ExportResult) -> None:
    """The uploaded evidence files, as ``evidence/ID-NAME`` (the evidence row's id and the
    name it was uploaded with); a file missing or changed is left out and named in the result
    (``qip audit verify`` names it too)."""
    from qip_flow.services.evidence import stored_files
    from qip_flow.store import evidence_files

    folder = evidence_files.evidence_folder(rt.db)
    for stored in stored_files(rt):
        path = evidence_files.path_of(folder, stored.sha256) if folder else None
        if path is None or not path.is_file() or evidence_files.sha256_of(path) != stored.sha256:
            result.missing_files.append(f"evidence {stored.evidence_id}: its file "
                                        f"{stored.sha256[:12]}… is missing or changed; not "
                                        "exported")
            continue
        shown = evidence_files.download_name(stored.filename, stored.media_type)
        name = f"{EVIDENCE_FOLDER}/{stored.evidence_id}-{shown}"
        target.copy_file(name, path)
        result.files.append(name)


def _write_json(handle: IO[str], session: Session, tables: list[Table], rt: Runtime,
                result: ExportResult) -> None:
    """One JSON object: what the export is, then every table as a list of rows, written row
    by row."""
    about = {"exported_at": rt.clock.now().isoformat(), "qip_flow": __version__,
             "rules_version": rt.rules.version,
             "evidence_files": {"folder": EVIDENCE_FOLDER,
                                "files": [f for f in result.files
                                          if f.startswith(EVIDENCE_FOLDER + "/")],
                                "missing": result.missing_files},
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
