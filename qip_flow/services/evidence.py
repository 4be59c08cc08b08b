"""Evidence files added to an action (the API's multipart upload): checked by content against
an allow-list, stored outside the database in a content-addressed folder, and recorded as the
action's evidence with the file's SHA-256.

Minimal on purpose: the web pages' evidence storage (issue #12) owns the real one; the API
calls only :func:`add_evidence_file`, whose signature is the seam to keep at merge time."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from qip_flow.errors import InvalidInput
from qip_flow.runtime import Runtime
from qip_flow.services.acting import act_on_action, authorise
from qip_flow.services.policy import Act, Actor

MAX_BYTES = 25 * 1024 * 1024
_MAGIC = ((b"%PDF-", "application/pdf"), (b"\x89PNG\r\n\x1a\n", "image/png"),
          (b"\xff\xd8\xff", "image/jpeg"), (b"PK\x03\x04", "application/zip"))


class TooLarge(InvalidInput):
    """An upload beyond the size allowed."""


def evidence_folder(rt: Runtime) -> Path:
    named = os.environ.get("QIP_EVIDENCE_DIR")
    return Path(named) if named else (rt.db.sqlite_folder() or Path.cwd()) / "evidence"


def sniff(head: bytes) -> str | None:
    """The file's type from its first bytes (PDF, PNG, JPEG, an Office document), or plain
    text (UTF-8 without control characters); None for anything else."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:
            return None
        text = head[:exc.start].decode("utf-8")
    if any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        return None
    return "text/plain"


def add_evidence_file(rt: Runtime, actor: Actor, action_id: str, filename: str, stream: BinaryIO,
                      *, description: str, max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Store the file (once per content) and record it as the action's evidence."""
    if not description.strip():
        raise InvalidInput("description: say what the file shows (e.g. 'MAR audit April')")
    authorise(rt, actor, Act.ADD_EVIDENCE, action_id)
    folder = evidence_folder(rt)
    folder.mkdir(parents=True, exist_ok=True)
    digest, size, head = hashlib.sha256(), 0, b""
    with tempfile.NamedTemporaryFile(dir=folder, delete=False) as out:
        try:
            while chunk := stream.read(1 << 16):
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(f"file: larger than {max_bytes // (1024 * 1024)} MB")
                head = (head + chunk)[:4096] if len(head) < 4096 else head
                digest.update(chunk)
                out.write(chunk)
            kind = sniff(head) if size else None
            if kind is None:
                raise InvalidInput(f"file: '{filename[:100]}' is not a PDF, an image, an office "
                                   "document or plain text (checked by its content)")
        except BaseException:
            Path(out.name).unlink(missing_ok=True)
            raise
    sha = digest.hexdigest()
    target = folder / sha[:2] / sha
    target.parent.mkdir(exist_ok=True)
    os.replace(out.name, target)
    name = Path(filename).name[:200] or "upload"
    said = description.strip().replace("|", "/")
    result = act_on_action(rt, actor, action_id, Act.ADD_EVIDENCE,
                           evidence=[f"{said}|sha256:{sha} {name}"])
    return {"action": result.entity_id, "sha256": sha, "bytes": size, "type": kind,
            "filename": name, "description": description.strip()}
