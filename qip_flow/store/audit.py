"""The append-only, hash-chained audit trail. Each event's hash covers its own content and the
previous event's hash, so editing, deleting or reordering any row breaks every hash after it and
``qip audit verify`` names the first broken event."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from qip_flow.errors import Refused
from qip_flow.store.models import AuditEvent, AuditHead

GENESIS = "genesis"
_HEAD = "qip_audit_head"  # the locked chain head, kept for the rest of the transaction


def _canonical(event: AuditEvent) -> str:
    body = {
        "seq": event.seq,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "what": event.what,
        "from": event.from_state,
        "to": event.to_state,
        "reason": event.reason,
        "detail": event.detail,
        "version": event.version,
        "prev": event.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)


def chain_hash(event: AuditEvent) -> str:
    return hashlib.sha256(_canonical(event).encode()).hexdigest()


def append(
    session: Session,
    *,
    at: datetime,
    actor: str,
    entity_type: str,
    entity_id: str,
    what: str,
    from_state: str | None = None,
    to_state: str | None = None,
    reason: str = "",
    detail: dict[str, Any] | None = None,
    version: str = "",
) -> AuditEvent:
    """Add one event at the end of the chain, inside the caller's transaction. The chain head
    row is locked (and re-read) first, so concurrent writers on PostgreSQL queue instead of
    forking, and each event is flushed at once so it never lands inside a later savepoint. On
    SQLite, whose writers are serialised, the head read by the transaction's first append is
    reused and events are flushed together."""
    serialised = session.get_bind().dialect.name == "sqlite"
    head = session.info.get(_HEAD) if serialised else None
    if head is None:
        head = session.exec(select(AuditHead).where(AuditHead.id == 1).with_for_update()
                            .execution_options(populate_existing=True)).first()
        if head is None:
            raise Refused("the audit chain head (table audithead, row 1) is missing, so nothing "
                          "can be recorded; run `qip audit verify` and restore the database "
                          "from a backup")
        if serialised:
            session.info[_HEAD] = head
    event = AuditEvent(
        seq=head.seq + 1,
        at=at,
        actor=actor,
        entity_type=entity_type,
        entity_id=entity_id,
        what=what,
        from_state=from_state,
        to_state=to_state,
        reason=reason,
        detail=json.loads(json.dumps(detail or {}, default=str)),
        version=version,
        prev_hash=head.hash,
        hash="",
    )
    event.hash = chain_hash(event)
    head.seq, head.hash = event.seq or 0, event.hash
    session.add(event)
    if not serialised:
        session.flush()
    return event


@dataclass
class ChainCheck:
    """The result of walking the chain and comparing its end with the head."""

    events: int
    broken_at: int | None = None
    problem: str = ""
    complete: bool = True  # the walk reached the last event (hashes up to it are known)
    last_hash: str = GENESIS
    hashes: dict[int, str] = field(default_factory=dict)  # the chain's hash at each asked seq

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def iter_events(session: Session, *, batch: int = 5000) -> Iterator[AuditEvent]:
    """Every event in ``seq`` order, read in batches so a long trail never sits in memory."""
    last_seq = 0
    while True:
        rows = session.exec(
            select(AuditEvent).where(col(AuditEvent.seq) > last_seq).order_by(col(AuditEvent.seq))
            .limit(batch)
        ).all()
        if not rows:
            return
        for event in rows:
            last_seq = event.seq or 0
            yield event
        session.expunge_all()


def verify(session: Session, *, batch: int = 5000, at_seqs: Collection[int] = ()) -> ChainCheck:
    """Recompute every hash in order and stop at the first event that does not fit; then the
    head must exist and name the last event (its number and hash). ``at_seqs`` asks for the
    chain's hash at those events (checkpoints are compared with them)."""
    previous, expected_seq, count = GENESIS, 1, 0
    wanted, hashes = set(at_seqs), {}
    for event in iter_events(session, batch=batch):
        seq = event.seq or 0
        problem = ""
        if seq != expected_seq:
            problem, seq = f"event {expected_seq} is missing", expected_seq
        elif event.prev_hash != previous:
            problem = f"event {seq} does not follow event {seq - 1}"
        elif chain_hash(event) != event.hash:
            problem = f"event {seq} ({event.what} on {event.entity_id}) was altered"
        if problem:
            return ChainCheck(count, seq, problem, complete=False, last_hash=previous,
                              hashes=hashes)
        if seq in wanted:
            hashes[seq] = event.hash
        previous, expected_seq, count = event.hash, seq + 1, count + 1
    found = ChainCheck(count, last_hash=previous, hashes=hashes)
    head = session.get(AuditHead, 1)
    if head is None:
        found.broken_at, found.problem = count + 1, (
            "the chain head (table audithead, row 1) is missing: it was deleted; restore the "
            "database from a backup")
    elif head.seq > count:
        found.broken_at, found.problem = count + 1, (
            f"the chain ends at event {count} but the head records {head.seq} events: events "
            "were deleted")
    elif head.seq < count:
        found.broken_at, found.problem = head.seq + 1, (
            f"the chain has {count} events but the head records {head.seq}: the head was set "
            "back")
    elif head.hash != previous:
        found.broken_at, found.problem = count, (
            f"the head records event {count} with hash {head.hash[:12]}… but event {count}'s "
            f"hash is {previous[:12]}…: the end of the trail was rewritten")
    return found


def history(session: Session, entity_ids: Iterable[str] | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(col(AuditEvent.seq))
    if entity_ids is not None:
        query = query.where(col(AuditEvent.entity_id).in_(list(entity_ids)))
    return list(session.exec(query).all())
