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
    """qip_flow's version and the size and modification time of each of its modules: a
    changed reader or checker gives a new stamp, so no entry outlives the code that made it."""
    digest = hashlib.sha256(getattr(qip_flow, "__version__", "").encode())
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
        if not _private(where):
            return build()  # a pickle is code: read none from a folder others could write
        with entry.open("rb") as f:
            return pickle.load(f)  # type: ignore[no-any-return]
    except Exception:  # missing, damaged or unreadable: check the files afresh
        pass
    value = build()
    _store(entry, value)
    return value


def _private(where: Path) -> bool:
    """True when ``where`` is missing (it will be made private) or belongs to this user and no
    one else can write to it."""
    try:
        st = where.stat()
    except FileNotFoundError:
        return True
    if not hasattr(os, "getuid"):  # Windows: the user's own LOCALAPPDATA
        return True
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _store(entry: Path, value: object) -> None:
    """Write ``value`` whole or not at all; a folder that cannot be written keeps no cache."""
    try:
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
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
