"""The installation's secret key, kept outside the database: whoever can edit the database must
not also hold what proves the record (audit checkpoints) or signs links (the web pages).

The key is ``QIP_SECRET_KEY`` from the environment when set, else the text of a key file:
``QIP_KEY_FILE``, else ``qip.key`` beside a SQLite database, else ``qip.key`` in the working
folder. ``qip init`` creates the file (0600) if it is missing. Each use gets its own subkey
(``subkey("audit-checkpoint")``), so one purpose's MAC is never valid for another. Nothing here
writes the key anywhere but its own file, and no message ever shows it."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from qip_flow.errors import InvalidInput
from qip_flow.store.db import Database

KEY_FILE_NAME = "qip.key"
MIN_KEY_CHARS = 32


def key_file(db: Database) -> Path:
    """Where the key file is (or would be) for this database."""
    named = os.environ.get("QIP_KEY_FILE")
    if named:
        return Path(named)
    return (db.sqlite_folder() or Path.cwd()) / KEY_FILE_NAME


def _checked(text: str, where: str) -> bytes:
    text = text.strip()
    if len(text) < MIN_KEY_CHARS:
        raise InvalidInput(f"{where}: the secret key has {len(text)} characters; use at least "
                           f"{MIN_KEY_CHARS} random ones (`qip init` writes a good key file)")
    return text.encode()


def secret_key(db: Database) -> bytes | None:
    """The key's bytes, or None when there is none yet (``qip init`` makes one)."""
    text = os.environ.get("QIP_SECRET_KEY")
    if text is not None:
        return _checked(text, "QIP_SECRET_KEY")
    path = key_file(db)
    if not path.is_file():
        return None
    try:
        return _checked(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: cannot read the secret key ({type(exc).__name__}); check "
                           "the file's owner and permissions") from None


def ensure_key(db: Database) -> Path | None:
    """Create the key file (readable by its owner only) unless the environment gives the key
    or the file exists; returns the file it created, else None."""
    if os.environ.get("QIP_SECRET_KEY") is not None:
        return None
    path = key_file(db)
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path


def subkey(key: bytes, purpose: str) -> bytes:
    """A key for one purpose only: HMAC-SHA256(key, purpose)."""
    return hmac.new(key, purpose.encode(), hashlib.sha256).digest()
