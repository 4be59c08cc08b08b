"""Uploaded evidence files, kept outside the database in a content-addressed folder.

A file is named by its SHA-256 (``evidence/ab/cdef…``): the same content is kept once, and a
name that no longer matches its content shows the file was changed. A file is read in chunks
with the size limit enforced while reading, written to a temporary file inside the folder,
judged by its content (never by its name or the type a browser declares) and only then renamed
into place, atomically, so nobody ever sees half a file and a refused file leaves nothing
behind.

The folder is the ``evidence_dir`` setting (``QIP_EVIDENCE_DIR``), else ``evidence/`` beside a
SQLite database. Back it up with the database (docs/operations.md)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from qip_flow.errors import InvalidInput, NotInitialised
from qip_flow.store.db import Database

DEFAULT_LIMIT = 25 * 1024 * 1024
CHUNK = 1 << 16
INCOMING = ".incoming"
SHA256 = re.compile(r"[0-9a-f]{64}")

#: the media types accepted, with the file name endings that go with each and how a person
#: would name the kind
ALLOWED: dict[str, tuple[tuple[str, ...], str]] = {
    "application/pdf": ((".pdf",), "PDF"),
    "image/png": ((".png",), "PNG image"),
    "image/jpeg": ((".jpg", ".jpeg"), "JPEG image"),
    "image/gif": ((".gif",), "GIF image"),
    "image/webp": ((".webp",), "WebP image"),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document":
        ((".docx",), "Word document"),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":
        ((".xlsx",), "Excel spreadsheet"),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation":
        ((".pptx",), "PowerPoint presentation"),
    "application/vnd.oasis.opendocument.text": ((".odt",), "OpenDocument text"),
    "application/vnd.oasis.opendocument.spreadsheet": ((".ods",), "OpenDocument spreadsheet"),
    "text/csv": ((".csv",), "CSV file"),
    "text/plain": ((".txt",), "plain text"),
}
KINDS = "PDF, PNG, JPEG, GIF or WebP images, Word, Excel, PowerPoint, OpenDocument, CSV or plain text"
#: an Office Open XML package names its main part; an OpenDocument one says its type first
OOXML_PARTS = (
    ("word/document.xml", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ("xl/workbook.xml", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    ("ppt/presentation.xml",
     "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
)
ODF_TYPES = ("application/vnd.oasis.opendocument.text",
             "application/vnd.oasis.opendocument.spreadsheet")


class TooLarge(InvalidInput):
    """The file is larger than the limit: it was not kept."""


class NotAllowedType(InvalidInput):
    """The file's content is not one of the allowed kinds: it was not kept."""


def evidence_folder(db: Database) -> Path | None:
    """``evidence_dir`` (``QIP_EVIDENCE_DIR`` or qip.toml), else ``evidence/`` beside a SQLite
    database; None for a server database without the setting."""
    from qip_flow import settings

    named = settings.resolve({})["evidence_dir"].value
    if named:
        return Path(named)
    folder = db.sqlite_folder()
    return folder / "evidence" if folder else None


def folder_for_writing(db: Database) -> Path:
    folder = evidence_folder(db)
    if folder is None:
        raise NotInitialised("there is no evidence folder: set evidence_dir in qip.toml or "
                             "QIP_EVIDENCE_DIR to a folder the server can write (and back up)")
    return folder


def parse_size(text: str, *, field: str = "QIP_UPLOAD_LIMIT") -> int:
    """``25MB``, ``500 KB``, ``1GB`` or a number of bytes."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", text.upper())
    if not found:
        raise InvalidInput(f"{field}: '{text}' is not a size; write e.g. 25MB, 500KB or 1048576")
    size = int(float(found.group(1)) * {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}[
        found.group(2)])
    if size < 1024:
        raise InvalidInput(f"{field}: '{text}' is under 1 KB; no evidence would fit")
    return size


def upload_limit() -> int:
    """The largest file accepted (``upload_limit``, 25 MB by default)."""
    from qip_flow import settings

    value = settings.resolve({})["upload_limit"].value
    return parse_size(value) if value else DEFAULT_LIMIT


def in_words(size: int) -> str:
    """``25 MB``, ``300 KB``, ``12 bytes``."""
    for unit, scale in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("KB", 1024)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f} {unit}" if value >= 10 or value == int(value) else f"{value:.1f} {unit}"
    return f"{size} byte{'s' * (size != 1)}"


@dataclass
class Staged:
    """A file read, hashed and judged, waiting in the folder's incoming area to be placed."""

    path: Path
    sha256: str
    size: int
    media_type: str

    @property
    def kind(self) -> str:
        return ALLOWED[self.media_type][1]


def path_of(folder: Path, sha256: str) -> Path:
    """Where the file with this content lives: ``ab/cdef…``."""
    if not SHA256.fullmatch(sha256):
        raise InvalidInput(f"'{sha256}' is not a SHA-256")
    return folder / sha256[:2] / sha256[2:]


def stage(folder: Path, source: BinaryIO, *, limit: int, filename: str = "") -> Staged:
    """Read ``source`` in chunks into a temporary file in ``folder`` (refused as soon as it
    passes ``limit``), hash it and judge its kind from its content."""
    incoming = folder / INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    fd, name = tempfile.mkstemp(dir=incoming, prefix="upload-")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the file is larger than {in_words(limit)}, the largest "
                                   "accepted: choose a smaller file (a PDF of the few pages "
                                   "that matter, or a smaller photograph)")
                digest.update(chunk)
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        if size == 0:
            raise NotAllowedType("the file is empty: choose the file that shows the evidence")
        media_type = sniff(path, filename)
        if media_type is None:
            raise NotAllowedType(f"this file is not one of the kinds accepted ({KINDS}), "
                                 "judged by what is inside it, whatever its name says")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Staged(path, digest.hexdigest(), size, media_type)


def place(folder: Path, staged: Staged) -> tuple[Path, bool]:
    """Rename a staged file to its content address (atomic); ``True`` when it was not there
    already (the same content uploaded twice is kept once)."""
    target = path_of(folder, staged.sha256)
    if target.is_file():
        staged.path.unlink(missing_ok=True)
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(staged.path, 0o440)
    os.replace(staged.path, target)
    _sync_folder(target.parent)
    return target, True


def discard(staged: Staged) -> None:
    staged.path.unlink(missing_ok=True)


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- what a file is, from its content ---------------------------------------------------------


def sniff(path: Path, filename: str = "") -> str | None:
    """The allowed media type the content shows, or None. Images and PDF by their signature;
    office documents by the members of their zip package; text by decoding it all as UTF-8
    without a NUL (CSV when it is named ``.csv``: both are text, judged the same)."""
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"PK\x03\x04"):
        return _office(path)
    if _is_text(path):
        return "text/csv" if filename.lower().endswith(".csv") else "text/plain"
    return None


def _office(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as package:
            names = set(package.namelist())
            if "mimetype" in names:
                with package.open("mimetype") as member:
                    declared = member.read(100).decode("ascii", "replace").strip()
                return declared if declared in ODF_TYPES and "content.xml" in names else None
            if "[Content_Types].xml" not in names:
                return None
            return next((kind for part, kind in OOXML_PARTS if part in names), None)
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError, NotImplementedError):
        return None


def _is_text(path: Path) -> bool:
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                if b"\x00" in chunk:
                    return False
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


# --- serving and checking ---------------------------------------------------------------------


def download_name(filename: str, media_type: str) -> str:
    """A name safe to offer in Content-Disposition: letters, digits, ``._- ``, at most 100
    characters, ending as its content's kind does (a text file named ``x.html`` is offered
    as ``x.html.txt``, so it never opens as a page)."""
    base = re.sub(r"[^A-Za-z0-9._ -]+", "_", os.path.basename(filename.replace("\\", "/")))
    base = base.strip(" ._")[:100] or "evidence"
    endings = ALLOWED.get(media_type, ((".bin",), ""))[0]
    if not base.lower().endswith(endings):
        base += endings[0]
    return base


def check(folder: Path | None, files: Iterable[tuple[int, str, int | None]]) -> list[str]:
    """Every stored file against its recorded hash and size: a problem named for each file
    missing or changed (``(evidence id, sha256, size)``)."""
    problems: list[str] = []
    verdicts: dict[str, str | None] = {}  # a file several rows share is read once
    for evidence_id, sha256, size in files:
        if folder is None:
            problems.append(f"evidence {evidence_id}: its file {sha256[:12]}… cannot be checked: "
                            "there is no evidence folder (set evidence_dir or QIP_EVIDENCE_DIR)")
            continue
        path = path_of(folder, sha256)
        if sha256 not in verdicts:
            verdicts[sha256] = ("is missing" if not path.is_file() else
                                "has changed since it was uploaded (its SHA-256 no longer "
                                "matches the record)" if sha256_of(path) != sha256 else None)
        verdict = verdicts[sha256]
        if verdict is None and size is not None and path.stat().st_size != size:
            verdict = "is not the size recorded"
        if verdict:
            problems.append(f"evidence {evidence_id}: its file {path} {verdict}")
    return problems
