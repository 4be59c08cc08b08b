"""``qip audit verify``: is the audit trail complete and unaltered? The hash chain and its head
say whether the trail in the database holds together; the keyed checkpoints outside the
database say whether it is still the trail that was there before (not cut short, rewritten, or
an older backup); ``--deep`` says whether the tables still say what the trail says.

A restore from a backup is legitimate but must be said out loud: ``--after-restore`` records
it in the trail ("restored from backup; trail at N events, newest checkpoint said M") and
writes a checkpoint that sets aside the checkpoints of the history the restore replaced."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qip_flow.errors import Refused
from qip_flow.runtime import Runtime
from qip_flow.services.replay import Replay, replay
from qip_flow.store import audit, checkpoints, keys
from qip_flow.store.checkpoints import Checkpoint
from qip_flow.store.db import Database
from qip_flow.store.models import AuditHead

RESTORED = "restored from backup"


@dataclass
class Verification:
    """Everything ``qip audit verify`` found."""

    chain: audit.ChainCheck
    checkpoint_file: Path
    checked: list[Checkpoint] = field(default_factory=list)  # this database's, in force
    superseded: list[Checkpoint] = field(default_factory=list)  # set aside by a restore
    problems: list[str] = field(default_factory=list)  # chain, head, file, foreign lines
    behind: list[str] = field(default_factory=list)  # checkpoints the trail no longer matches
    notes: list[str] = field(default_factory=list)
    deep: Replay | None = None
    restore: Checkpoint | None = None  # written by --after-restore

    @property
    def ok(self) -> bool:
        return not (self.problems or self.behind or (self.deep and self.deep.differences))

    @property
    def newest(self) -> Checkpoint | None:
        return self.checked[-1] if self.checked else None

    def as_dict(self) -> dict[str, Any]:
        newest = self.newest
        return {
            "ok": self.ok, "events": self.chain.events, "broken_at": self.chain.broken_at,
            "problem": self.chain.problem, "problems": self.problems + self.behind,
            "checkpoint_file": str(self.checkpoint_file),
            "checkpoints": {"checked": len(self.checked), "superseded": len(self.superseded),
                            "newest": newest.body() if newest else None},
            "differences": [d.as_dict() for d in self.deep.differences] if self.deep else None,
            "notes": self.notes + (self.deep.notes if self.deep else []),
            "restore": self.restore.body() if self.restore else None,
        }


def _in_force(found: list[Checkpoint]) -> tuple[list[Checkpoint], list[Checkpoint]]:
    """A restore line sets aside the earlier checkpoints above the count it kept."""
    kept, superseded = [], []
    for i, checkpoint in enumerate(found):
        later = [c.kept for c in found[i + 1:] if c.source == "restore" and c.kept is not None]
        (superseded if any(checkpoint.events > k for k in later) else kept).append(checkpoint)
    return kept, superseded


def _check(rt: Runtime) -> Verification:
    return check_database(rt.db, keys.secret_key(rt.db), checkpoints.checkpoint_file(rt.db))


def check_database(db: Database, key: bytes | None, checkpoint_path: Path) -> Verification:
    """The chain, its head and the checkpoints of ``checkpoint_path`` signed with ``key`` (a
    backup's copy is checked with the live key and checkpoints)."""
    file = checkpoints.read(checkpoint_path, key)
    with checkpoints.consistent_read(db) as session:
        head = session.get(AuditHead, 1)
        identity = head.database_id if head else None
        ours = [c for c in file.checkpoints if c.database == identity]
        checked, superseded = _in_force(ours)
        chain = audit.verify(session, at_seqs={c.events for c in checked})
    found = Verification(chain, file.path, checked, superseded, list(file.problems))
    if not chain.ok:
        found.problems.insert(0, f"{chain.problem}; {chain.events} events before it verify"
                              if not chain.complete else
                              f"{chain.problem}; the {chain.events} events themselves verify")
    foreign = [c for c in file.checkpoints if c.database != identity]
    if foreign and identity is not None:
        found.problems.append(
            f"{file.path}: {len(foreign)} checkpoint(s) belong to another database (id "
            f"{foreign[0].database}, first at line {foreign[0].line}; this one is {identity}): "
            "the file is another database's, or this database's identity was changed")
    for c in checked:
        if not chain.complete and c.events >= (chain.broken_at or 0):
            continue  # the chain's own break is already named
        if c.events > chain.events:
            trail = "the trail is empty" if chain.events == 0 else \
                f"the trail has {chain.events} events"
            found.behind.append(
                f"{trail} but {c.describe()} recorded {c.events}: events were deleted, or an "
                "older backup was restored (then run `qip audit verify --after-restore`)")
        elif chain.hashes.get(c.events, audit.GENESIS) != c.hash:
            found.behind.append(
                f"at event {c.events} the chain's hash is {chain.hashes.get(c.events, '')[:12]}… "
                f"but {c.describe()} recorded {c.hash[:12]}…: the trail was rewritten, or an "
                "older backup was restored (then run `qip audit verify --after-restore`)")
    if key is None and not file.lines:
        found.notes.append(f"no checkpoints yet: there is no secret key ({keys.key_file(db)} or "
                           "QIP_SECRET_KEY); `qip init` creates one")
    if superseded:
        found.notes.append(f"{len(superseded)} checkpoint(s) describe history replaced by a "
                           "recorded restore and were set aside")
    return found


def verify(rt: Runtime, *, deep: bool = False, after_restore: bool = False,
           by: str = "") -> Verification:
    """Check the chain, its head and every checkpoint (and, with ``deep``, the tables); with
    ``after_restore``, record a restore that explains checkpoints the trail is behind."""
    found = _check(rt)
    if after_restore and found.problems:
        raise Refused("--after-restore: the trail has faults that a restore does not explain; "
                      "nothing was recorded", details=found.problems)
    if after_restore and found.behind:
        found = _record_restore(rt, found, by)
    elif after_restore:
        found.notes.append("--after-restore: nothing to record; the trail matches every "
                           "checkpoint")
    if deep:
        with rt.db.read() as session:
            found.deep = replay(rt, session)
    _check_evidence_files(rt, found)
    return found


def _check_evidence_files(rt: Runtime, found: Verification) -> None:
    """Every uploaded evidence file against the SHA-256 its row (and the trail) recorded."""
    from qip_flow.services.evidence import check_files

    count, problems = check_files(rt)
    found.problems += problems
    if count:
        found.notes.append(f"{count} evidence file{'s' * (count != 1)} checked against "
                           f"{'their' if count != 1 else 'its'} SHA-256"
                           + (f": {len(problems)} missing or changed" if problems else ""))


def _record_restore(rt: Runtime, found: Verification, by: str) -> Verification:
    newest = max(found.checked, key=lambda c: c.events)
    events = found.chain.events
    matching = [c.events for c in found.checked
                if c.events <= events and found.chain.hashes.get(c.events, audit.GENESIS) == c.hash]
    kept = max(matching, default=0)
    now = rt.clock.now()
    with rt.db.write() as session:
        audit.append(session, at=now, actor=by, entity_type="database", entity_id="audit trail",
                     what=RESTORED,
                     reason=f"{RESTORED}; trail at {events} events, newest checkpoint said "
                            f"{newest.events}",
                     detail={"events": events, "kept": kept,
                             "newest_checkpoint": newest.body() | {"line": newest.line},
                             "checkpoint_file": str(found.checkpoint_file)})
    restore = checkpoints.write(rt.db, at=now, source="restore", kept=kept,
                                restored_events=events, newest_said=newest.events)
    if restore is None:  # a checkpoint was read, so a key exists
        raise Refused("--after-restore: the secret key vanished while recording the restore")
    result = _check(rt)
    result.restore = restore
    return result


def checkpoint(rt: Runtime) -> Checkpoint:
    """``qip audit checkpoint``: write one now (the tick writes one after every run)."""
    written = checkpoints.write(rt.db, at=rt.clock.now(), source="command")
    if written is None:
        raise Refused(f"there is no secret key to sign a checkpoint with: run `qip init` (it "
                      f"creates {keys.key_file(rt.db)}) or set QIP_SECRET_KEY")
    return written
