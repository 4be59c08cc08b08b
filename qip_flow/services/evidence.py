"""Evidence files: uploaded with an action's event, kept outside the database under their
SHA-256 (``store/evidence_files.py``), recorded in the evidence row and the audit trail, given
back only to people who may see the plan, and checked by ``qip audit verify``.

A file is read, hashed and judged before anything is written to the database; it is placed in
the folder before the transaction, and removed again if the transaction refuses (unless another
row already uses the same content), so a refusal leaves neither a row nor a file."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from sqlmodel import col, select

from qip_flow.config.limits import MAX_NAME
from qip_flow.errors import InvalidInput, NotFound
from qip_flow.runtime import Runtime
from qip_flow.services import lifecycle
from qip_flow.services.policy import Act, Actor, Permission
from qip_flow.store import evidence_files
from qip_flow.store.models import Action, Evidence
from qip_flow.workflow.subject import EvidenceItem

#: the action events an uploaded file may come with
FILE_EVENTS = ("add_evidence", "complete")


def _clean_name(filename: str) -> str:
    """The name as the person's computer gave it, without folders or control characters."""
    name = re.sub(r"[\x00-\x1f\x7f]+", "", filename.replace("\\", "/").rsplit("/", 1)[-1])
    return name.strip()[:255]


def add_file(rt: Runtime, action_id: str, *, by: str, source: BinaryIO, filename: str,
             description: str, event: str = "add_evidence", note: str | None = None,
             via: dict[str, str] | None = None) -> lifecycle.EventResult:
    """Keep an uploaded file as evidence of an action with ``event`` (``add_evidence``, or
    ``complete``: done, with this file as its evidence)."""
    if event not in FILE_EVENTS:
        raise InvalidInput(f"a file comes with {' or '.join(FILE_EVENTS)}, not '{event}'")
    description = description.strip()
    if not description:
        raise InvalidInput("description: say what the file shows, e.g. 'MAR audit, week 12'")
    if len(description) > MAX_NAME:
        raise InvalidInput(f"description: {len(description)} characters; keep it to {MAX_NAME}")
    folder = evidence_files.folder_for_writing(rt.db)
    name = _clean_name(filename)
    staged = evidence_files.stage(folder, source, limit=evidence_files.upload_limit(),
                                  filename=name)
    item = EvidenceItem(description, reference=name or staged.kind, file={
        "sha256": staged.sha256, "size": staged.size, "media_type": staged.media_type,
        "filename": name})
    path, created = evidence_files.place(folder, staged)
    try:
        return lifecycle.fire_event(rt, action_id, event, by=by, note=note, files=[item],
                                    via=via)
    except BaseException:
        if created:
            _forget_unless_used(rt, path, staged.sha256)
        raise


def add_evidence_file(rt: Runtime, actor: Actor, action_id: str, filename: str,
                      stream: BinaryIO, *, description: str) -> dict[str, Any]:
    """The API's upload: :func:`add_file` for an actor the policy lets add evidence, answered
    with what was kept."""
    from qip_flow.services.acting import authorise

    authorise(rt, actor, Act.ADD_EVIDENCE, action_id)
    result = add_file(rt, action_id, by=actor.person.id, source=stream, filename=filename,
                      description=description, via={"door": actor.door})
    with rt.db.read() as session:
        row = session.exec(select(Evidence).where(Evidence.action_id == result.entity_id)
                           .order_by(col(Evidence.id).desc())).first()
    assert row is not None and row.sha256 is not None
    return {"action": result.entity_id, "sha256": row.sha256, "bytes": row.size or 0,
            "type": row.media_type, "filename": row.filename, "description": row.description}


def _forget_unless_used(rt: Runtime, path: Path, sha256: str) -> None:
    with rt.db.read() as session:
        used = session.exec(select(Evidence.id).where(Evidence.sha256 == sha256)).first()
    if used is None:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Download:
    """A stored file as it is handed out: where it is, what it is, the name to offer."""

    evidence_id: int
    path: Path
    media_type: str
    filename: str
    size: int
    sha256: str


def permission(rt: Runtime, actor: Actor, evidence_id: int) -> Permission:
    """May ``actor`` have this evidence? Whoever may see its plan (and its action)."""
    from qip_flow.services.pages import policy_for

    with rt.db.read() as session:
        row = session.get(Evidence, evidence_id)
        if row is None:
            raise NotFound(f"there is no evidence numbered {evidence_id}")
        plan = lifecycle.get_plan(session, row.plan_id)
        action = session.get(Action, row.action_id) if row.action_id else None
        return policy_for(rt, session).decide(actor, Act.VIEW, plan, action)


def file_for(rt: Runtime, evidence_id: int) -> Download:
    """The stored file of an evidence row (after :func:`permission`)."""
    with rt.db.read() as session:
        row = session.get(Evidence, evidence_id)
    if row is None:
        raise NotFound(f"there is no evidence numbered {evidence_id}")
    if not row.sha256:
        raise NotFound(f"evidence {evidence_id} ({row.description}) is a description, not an "
                       "uploaded file: there is nothing to download")
    folder = evidence_files.evidence_folder(rt.db)
    path = evidence_files.path_of(folder, row.sha256) if folder else None
    if path is None or not path.is_file():
        raise NotFound(f"the file of evidence {evidence_id} is missing from the evidence "
                       "folder; tell your administrator (`qip audit verify` names it)")
    return Download(evidence_id, path, row.media_type,
                    evidence_files.download_name(row.filename, row.media_type),
                    row.size or path.stat().st_size, row.sha256)


@dataclass(frozen=True)
class StoredFile:
    evidence_id: int
    sha256: str
    size: int | None
    filename: str
    media_type: str


def stored_files(rt: Runtime) -> list[StoredFile]:
    """Every evidence row with a file, in id order."""
    with rt.db.read() as session:
        return [StoredFile(i, sha, size, name, kind) for i, sha, size, name, kind in session.exec(
            select(Evidence.id, Evidence.sha256, Evidence.size, Evidence.filename,
                   Evidence.media_type)
            .where(col(Evidence.sha256).is_not(None)).order_by(col(Evidence.id))).all()
            if i is not None and sha]


def check_files(rt: Runtime) -> tuple[int, list[str]]:
    """``qip audit verify``: every stored file against its recorded hash; how many were
    checked and a problem naming each one missing or changed."""
    files = stored_files(rt)
    folder = evidence_files.evidence_folder(rt.db)
    return len(files), evidence_files.check(folder, [(f.evidence_id, f.sha256, f.size)
                                                     for f in files])
