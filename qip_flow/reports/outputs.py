"""Where ``--out`` may write. A report or an export never overwrites the database, a file qip
did not write, or a path that leads outside the folder it names (a symbolic link) unless the
person says ``--force``; the database is never overwritten at all.

"A file qip wrote" is one listed, with its SHA-256, in the folder's ``.qip-outputs.json``: a
report written again replaces the previous one, but a file edited since, or someone else's file
of the same name, is refused. Files are written beside their target and renamed into place, so
a failed write leaves the old file whole and a link is replaced, never followed."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from qip_flow.errors import InvalidInput

MANIFEST = ".qip-outputs.json"


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def _manifest(folder: Path) -> dict[str, str]:
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def written_by_qip(path: Path) -> bool:
    """``path`` is a file qip wrote and nobody has changed since."""
    recorded = _manifest(path.parent).get(path.name)
    return recorded is not None and path.is_file() and not path.is_symlink() \
        and recorded == _digest(path)


def record(*paths: Path) -> None:
    """Remember ``paths`` (in one folder) as qip's own outputs."""
    if not paths:
        return
    folder = paths[0].parent
    entries = _manifest(folder)
    entries.update({p.name: _digest(p) for p in paths})
    (folder / MANIFEST).write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n",
                                   encoding="utf-8")


def _refuse_database(path: Path, database: Path | None) -> None:
    if database is None:
        return
    live = database.resolve()
    protected = {live, *(live.with_name(live.name + s) for s in ("-wal", "-shm", "-journal"))}
    if path.resolve() in protected or path.absolute() in protected:
        raise InvalidInput(f"--out: {path} is the live database; name another file (a report or "
                           "an export never overwrites the database, even with --force)")


def check_file(path: Path, *, force: bool, database: Path | None) -> None:
    """Refuse a file target that qip must not write (see the module's rules)."""
    _refuse_database(path, database)
    if not path.parent.is_dir():
        raise InvalidInput(f"--out: the folder {path.parent} does not exist")
    if path.is_dir():
        raise InvalidInput(f"--out: {path} is a folder; name a file, e.g. {path / 'report.html'}")
    if force:
        return
    if path.is_symlink() or path.resolve().parent != path.parent.resolve():
        raise InvalidInput(f"--out: {path} is a link (to {path.resolve()}); name a plain file, "
                           "or give --force to replace the link itself")
    if path.exists() and not written_by_qip(path):
        raise InvalidInput(f"--out: {path} already exists and qip did not write it (or it was "
                           "changed since); name a new file, or give --force to replace it")


def check_folder(folder: Path, *, force: bool, database: Path | None) -> None:
    """An export folder: new, empty, or holding only qip's own earlier outputs."""
    _refuse_database(folder, database)
    if not folder.exists():
        if not folder.parent.is_dir():
            raise InvalidInput(f"--out: the folder {folder.parent} does not exist")
        return
    if not folder.is_dir():
        raise InvalidInput(f"--out: {folder} already exists and is not a folder; name a new "
                           "folder or a .zip file")
    if force:
        return
    others = [p.name for p in folder.iterdir() if p.name != MANIFEST and not written_by_qip(p)]
    if others:
        shown = ", ".join(sorted(others)[:3]) + (", …" if len(others) > 3 else "")
        raise InvalidInput(f"--out: {folder} holds files qip did not write ({shown}); name a new "
                           "folder, or give --force to write into it")


def write_file(path: Path, produce: Callable[[Path], object], *, force: bool = False,
               database: Path | None = None) -> Path:
    """Check ``path``, let ``produce`` write a file beside it, rename it into place and record
    it as qip's own."""
    check_file(path, force=force, database=database)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        produce(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    record(path)
    return path
