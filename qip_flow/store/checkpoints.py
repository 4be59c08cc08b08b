"""Audit checkpoints: the chain head (its event count and hash), with the time and this
database's identity, written as one JSON line to an append-only file *outside* the database and
keyed with an HMAC whose key is outside it too. Whoever can rewrite the database — cut the
trail's tail, rewrite the head, restore an older copy — cannot make the file agree with it:
``qip audit verify`` compares them.

The file is ``QIP_CHECKPOINT_FILE``, else ``qip-audit-checkpoints.jsonl`` beside a SQLite
database, else in the working folder. Each line holds ``database``, ``events``, ``hash``,
``at`` and ``source`` (``tick``, ``command`` or ``restore``); a restore line also holds
``kept`` (earlier checkpoints above that count describe the history the restore replaced),
``restored_events`` and ``newest_said``; ``mac`` is HMAC-SHA256 over the rest."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from qip_flow.errors import InvalidInput, QipError, Refused
from qip_flow.store import keys
from qip_flow.store.audit import GENESIS
from qip_flow.store.db import Database
from qip_flow.store.models import AuditEvent, AuditHead

CHECKPOINT_FILE_NAME = "qip-audit-checkpoints.jsonl"
PURPOSE = "audit-checkpoint"


def checkpoint_file(db: Database) -> Path:
    """Where this database's checkpoints are written and read."""
    named = os.environ.get("QIP_CHECKPOINT_FILE")
    if named:
        return Path(named)
    return (db.sqlite_folder() or Path.cwd()) / CHECKPOINT_FILE_NAME


@dataclass(frozen=True)
class Checkpoint:
    """One line of the checkpoint file (``line`` is where it was read, not part of it)."""

    database: str
    events: int
    hash: str
    at: str
    source: str
    kept: int | None = None
    restored_events: int | None = None
    newest_said: int | None = None
    line: int = 0

    def body(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "line" and v is not None}

    def describe(self) -> str:
        return f"checkpoint line {self.line} ({self.at[:16].replace('T', ' ')}, {self.source})"


def _mac(key: bytes, body: dict[str, Any]) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hmac.new(keys.subkey(key, PURPOSE), text.encode(), hashlib.sha256).hexdigest()


@dataclass
class CheckpointFile:
    """What was read from the file: the checkpoints whose MAC holds, and every line that
    could not be trusted."""

    path: Path
    checkpoints: list[Checkpoint]
    problems: list[str]
    lines: int = 0


def read(path: Path, key: bytes | None) -> CheckpointFile:
    found = CheckpointFile(path, [], [])
    if not path.exists():
        return found
    names = set(Checkpoint.__dataclass_fields__) - {"line"}
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, text in enumerate(lines, 1):
            if not text.strip():
                continue
            found.lines += 1
            try:
                data = json.loads(text)
                mac = data.pop("mac")
                checkpoint = Checkpoint(**{k: v for k, v in data.items() if k in names},
                                        line=number)
                if set(data) - names or not isinstance(checkpoint.events, int):
                    raise ValueError
            except (ValueError, TypeError, KeyError, AttributeError):
                found.problems.append(f"{path}, line {number}: not a checkpoint (edited, or "
                                      "another file)")
                continue
            if key is None:
                continue
            if not hmac.compare_digest(str(mac), _mac(key, checkpoint.body())):
                found.problems.append(
                    f"{path}, line {number}: the checkpoint's MAC does not match: the line was "
                    "edited, or the secret key is not the one it was written with")
                continue
            found.checkpoints.append(checkpoint)
    if key is None and found.lines:
        found.problems.append(
            f"{path} holds {found.lines} checkpoint(s) but there is no secret key to check them "
            f"(QIP_SECRET_KEY, or the key file {keys.KEY_FILE_NAME}): restore the key file")
    return found


def head_of(session: Session) -> AuditHead:
    """The chain head, refused unless it names the trail's last event: a head that does not
    fit must never be vouched for by a checkpoint."""
    head = session.get(AuditHead, 1)
    if head is None:
        raise Refused("the audit chain head (table audithead, row 1) is missing; run `qip audit "
                      "verify`")
    last = session.exec(select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(1)).first()
    at_end = (last.seq, last.hash) if last else (0, GENESIS)
    if at_end != (head.seq, head.hash):
        raise Refused("the audit chain head does not name the trail's last event; run `qip "
                      "audit verify`")
    return head


@contextmanager
def consistent_read(db: Database) -> Iterator[Session]:
    """A read that sees one moment of the database throughout (SQLite's read transaction does;
    PostgreSQL needs REPEATABLE READ), so the head and the events it names are read together
    even while other workers append."""
    with db.read() as session:
        if not db.is_sqlite:
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        yield session


def write(db: Database, *, at: datetime, source: str, **restore: int) -> Checkpoint | None:
    """Append a checkpoint of the head as it is now; None when there is no secret key yet."""
    key = keys.secret_key(db)
    if key is None:
        return None
    with consistent_read(db) as session:
        head = head_of(session)
        checkpoint = Checkpoint(head.database_id, head.seq, head.hash, at.isoformat(), source,
                                **restore)
    path = checkpoint_file(db)
    line = json.dumps({**checkpoint.body(), "mac": _mac(key, checkpoint.body())},
                      sort_keys=True, separators=(",", ":"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot append the audit checkpoint ({exc.strerror or exc}); "
                           "make the file writable or name another with QIP_CHECKPOINT_FILE") from None
    return checkpoint


def after_tick(db: Database, at: datetime) -> None:
    """The tick's checkpoint: written when a key exists; a head that does not fit is left for
    ``qip audit verify`` to name rather than stopping the tick."""
    try:
        write(db, at=at, source="tick")
    except Refused:
        return


def _written(checkpoint: Checkpoint) -> datetime:
    at = datetime.fromisoformat(checkpoint.at)
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def latest(db: Database, *, until: datetime | None = None) -> Checkpoint | None:
    """The newest trusted checkpoint of this database (for the board pack's minutes); with
    ``until``, the newest written by then (a report as at an earlier moment)."""
    with db.read() as session:
        head = session.get(AuditHead, 1)
    if head is None:
        return None
    try:
        found = read(checkpoint_file(db), keys.secret_key(db))
    except (QipError, OSError):  # a report must not fail on the file; verify names the fault
        return None
    ours = [c for c in found.checkpoints if c.database == head.database_id
            and (until is None or _written(c) <= until)]
    return ours[-1] if ours else None
