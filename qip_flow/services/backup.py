"""``qip backup`` and ``qip restore`` for the embedded SQLite database: a consistent copy taken
with SQLite's online backup API while qip_flow keeps running, the evidence folder and the audit
checkpoints beside it, a manifest of SHA-256 hashes, and the audit chain verified on the copy
before the command says it worked. PostgreSQL is backed up with ``pg_dump`` (docs/operations.md)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qip_flow.errors import InvalidInput, Refused
from qip_flow.runtime import Runtime
from qip_flow.services import integrity
from qip_flow.store import audit as audit_trail
from qip_flow.store import checkpoints, keys
from qip_flow.store.db import Database
from qip_flow.store.evidence_files import INCOMING, evidence_folder

DATABASE_NAME = "qip.db"
MANIFEST_NAME = "manifest.json"


@dataclass
class BackupResult:
    folder: Path
    files: dict[str, str] = field(default_factory=dict)  # relative path → sha256
    audit_events: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "files": len(self.files),
                "audit_events": self.audit_events, "chain": "intact"}


def _sqlite_file(db: Database, what: str) -> Path:
    path = db.sqlite_file()
    if path is None:
        raise InvalidInput(f"{what} works on a SQLite database; back up PostgreSQL with pg_dump "
                           "(docs/operations.md shows how) and copy the evidence folder")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_database(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy even while another process writes."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def _verify_copy(database: Path, key: bytes | None, checkpoint_path: Path | None) -> int:
    """``qip audit verify`` on a copy: its chain and head, and (for a fresh backup) the live
    checkpoints, which a copy taken now must match. A restore's copy is older than the newest
    checkpoints by design, so it is checked without them."""
    db = Database(f"sqlite:///{database}")
    try:
        db.require_schema()
        if checkpoint_path is None:
            with db.read() as session:
                chain = audit_trail.verify(session)
            problems = [] if chain.ok else [chain.problem]
            events = chain.events
        else:
            found = integrity.check_database(db, key, checkpoint_path)
            problems, events = found.problems + found.behind, found.chain.events
    finally:
        db.dispose()
    if problems:
        raise Refused(f"the audit trail in {database} does not verify; the copy is not a "
                      "trustworthy backup", details=problems)
    return events


def _copy_unless_there(source: str, target: str) -> str:
    """Evidence files are named by their content: one already in place is the same file (and
    is kept read-only)."""
    if not os.path.exists(target):
        shutil.copy2(source, target)
    return target


def backup(rt: Runtime, target: Path) -> BackupResult:
    """Copy the database, its evidence and checkpoints into ``target`` (a new or empty folder)."""
    source = _sqlite_file(rt.db, "qip backup")
    rt.db.require_schema()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InvalidInput(f"{target}: exists and is not an empty folder; name a new folder "
                           "for each backup")
    target.mkdir(parents=True, exist_ok=True)
    result = BackupResult(folder=target)
    _copy_database(source, target / DATABASE_NAME)
    evidence = evidence_folder(rt.db)
    if evidence and evidence.is_dir():  # uploads still arriving are not evidence yet
        shutil.copytree(evidence, target / "evidence", ignore=shutil.ignore_patterns(INCOMING))
    live_checkpoints = checkpoints.checkpoint_file(rt.db)
    if live_checkpoints.is_file():
        shutil.copy2(live_checkpoints, target / live_checkpoints.name)
    result.audit_events = _verify_copy(target / DATABASE_NAME, keys.secret_key(rt.db),
                                       live_checkpoints)
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        result.files[path.relative_to(target).as_posix()] = _sha256(path)
    (target / MANIFEST_NAME).write_text(json.dumps(
        {"taken_at": rt.clock.now().isoformat(), "source": str(source),
         "audit_events": result.audit_events, "files": result.files}, indent=2) + "\n")
    return result


def restore(rt: Runtime, source: Path, *, force: bool = False) -> BackupResult:
    """Put a backup back in place of the database named by ``--db``, after checking every
    file against the manifest and the audit chain of the copy; the live file is replaced only
    with ``--force``."""
    target = _sqlite_file(rt.db, "qip restore")
    manifest_path = source / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InvalidInput(f"{source}: has no {MANIFEST_NAME}; name a folder made by `qip backup`")
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = dict(manifest["files"])
    except (ValueError, KeyError, TypeError):
        raise InvalidInput(f"{manifest_path}: is not a qip backup manifest") from None
    for name, digest in files.items():
        path = source / name
        if not path.is_file() or _sha256(path) != digest:
            raise Refused(f"{path}: missing or changed since the backup was taken; nothing was "
                          "restored")
    _verify_copy(source / DATABASE_NAME, None, None)
    if target.exists() and not force:
        raise Refused(f"{target}: a database is already there; add --force to replace it (take a "
                      "`qip backup` of it first)")
    rt.db.dispose()
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    _copy_database(source / DATABASE_NAME, target)
    evidence = evidence_folder(rt.db)
    if evidence and (source / "evidence").is_dir():
        shutil.copytree(source / "evidence", evidence, dirs_exist_ok=True,
                        copy_function=_copy_unless_there)
    # The live checkpoints file is append-only and stays: it is what shows that this database
    # was put back to an earlier point (`qip audit verify --after-restore` records that).
    result = BackupResult(folder=source, files=files)
    result.audit_events = _verify_copy(target, None, None)
    return result
