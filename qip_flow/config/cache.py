"""A per-user cache of checked governance files, so a command that reads the rules or the
workflows doesn't parse and check the same YAML again on every run (a third of what
``qip explain`` does beyond its imports).

An entry is found by a hash of everything its result depends on: the file texts and names, what
the caller adds (e.g. the workflow states the rules are checked against), qip_flow's version and
the size and modification time of every qip_flow module, so any change to the files or the
code that reads them misses the cache and checks afresh. Entries are pickles, so they live in
the user's own cache folder (made private to the user) and are written whole (a temporary file
renamed into place); a folder that cannot be written or an entry that cannot be read is passed
over silently and the files are checked as if there were no cache. Only files that passed their
checks are kept: a file with errors is checked (and refused) every time."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import TypeVar

import pydantic

import qip_flow

T = TypeVar("T")

#: Set to an empty value to turn the cache off; to a folder to keep it there.
ENV = "QIP_CACHE_DIR"
#: Entries kept of each kind; the oldest go when a new one is written (tests and previews of
#: edited files would otherwise fill the folder).
KEEP = 16


def folder() -> Path | None:
    """Where entries are kept: ``$QIP_CACHE_DIR``, else the platform's user cache folder."""
    chosen = os.environ.get(ENV)
    if chosen is not None:
        return Path(chosen) if chosen else None
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return Path(base) / "qip_flow" / "Cache" if base else None
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "qip_flow"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qip_flow"


@cache
def code_stamp() -> str:
    """qip_flow's, Python's and pydantic's versions and the size and modification time of each
    qip_flow module: a changed reader or checker gives a new stamp, so no entry outlives the
    code that made it. Worked out when this module is imported, so a long-running process
    that outlives an upgrade on disk keeps writing under its own code's stamp."""
    digest = hashlib.sha256(f"{getattr(qip_flow, '__version__', '')}\0{sys.version}\0"
                            f"{pydantic.VERSION}\0".encode())  # entries hold pydantic models
    root = Path(qip_flow.__file__).parent
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                st = os.stat(os.path.join(dirpath, name))
                digest.update(f"{dirpath}/{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()


def key(kind: str, parts: Iterable[str]) -> str:
    digest = hashlib.sha256(f"{kind}\0{code_stamp()}\0".encode())
    for part in parts:
        digest.update(f"{len(part)}\0{part}\0".encode())
    return digest.hexdigest()[:32]


def cached(kind: str, parts: Iterable[str], build: Callable[[], T]) -> T:
    """``build()``'s result, from the cache when ``parts`` (and the code) are unchanged."""
    where = folder()
    if where is None:
        return build()
    entry = where / f"{kind}-{key(kind, parts)}.pickle"
    try:
        if where.exists() and not _private(where):
            return build()  # a pickle is code: read none from a folder others could write
        return _read(entry)
    except Exception:  # missing, damaged, unreadable or not ours: check the files afresh
        pass
    value = build()
    _store(entry, value)
    return value


def _read(entry: Path) -> object:
    """Unpickle ``entry`` only if the file itself (opened without following a link) belongs to
    this user and no one else can write it: checked on the open file, so a folder swapped
    after :func:`_private` looked at it gains nothing."""
    fd = os.open(entry, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        if not _ours(os.fstat(f.fileno())):
            raise PermissionError(f"{entry} is not this user's own")
        return pickle.load(f)


def _ours(st: os.stat_result) -> bool:
    """Owned by this user and writable by no one else (Windows: the user's own LOCALAPPDATA)."""
    if not hasattr(os, "getuid"):
        return True
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _private(where: Path) -> bool:
    """True when the folder ``where`` belongs to this user and no one else can write to it."""
    try:
        return _ours(where.stat())
    except OSError:
        return False


def _home_is_ours() -> bool:
    """False under ``sudo`` keeping another user's HOME: nothing is created in their home."""
    try:
        return not hasattr(os, "geteuid") or Path.home().stat().st_uid == os.geteuid()
    except (OSError, RuntimeError):
        return False


def _store(entry: Path, value: object) -> None:
    """Write ``value`` whole or not at all; a folder that cannot be written keeps no cache."""
    try:
        entry.parent.mkdir(mode=0o700, parents=_home_is_ours(), exist_ok=True)
        if not _private(entry.parent):
            return
        handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(handle, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, entry)
    except Exception:  # not kept is only slower
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return
    _prune(entry)


def _prune(entry: Path) -> None:
    """Keep the newest ``KEEP`` entries of ``entry``'s kind."""
    kind = entry.name.split("-", 1)[0]
    with contextlib.suppress(OSError):
        others = sorted((e for e in entry.parent.glob(f"{kind}-*.pickle") if e != entry),
                        key=_modified, reverse=True)
        for old in others[KEEP - 1:]:
            with contextlib.suppress(OSError):
                old.unlink()


def _modified(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


code_stamp()  # now, with the code this process runs (see its docstring)
