"""Settings in one place. Each setting is read, in this order, from the command line, the
environment, the settings file (``qip.toml``, or ``[tool.qip]`` in ``pyproject.toml``) and the
default; ``qip config show`` prints what is in force and where each value came from."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qip_flow.errors import InvalidDefinition


@dataclass(frozen=True)
class Setting:
    """One setting: its command-line flag, its environment variable, its key in qip.toml."""

    key: str
    flag: str | None
    env: str
    help: str
    default: str = ""
    is_path: bool = False
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("database", "--db", "QIP_DATABASE_URL", "database URL or SQLite file", "./qip.db"),
    Setting("config", "--config", "QIP_CONFIG", "folder holding workflows/ and rules/",
            "the shipped workflows and rules", is_path=True),
    Setting("channels", "--channels", "QIP_CHANNELS", "Apprise YAML channels file",
            "CONFIG/channels.yaml, else a local file beside the database", is_path=True),
    Setting("now", "--now", "QIP_NOW", "simulated clock (simulation databases only)",
            "the server's clock"),
    Setting("log_format", "--log-format", "QIP_LOG_FORMAT", "text or json", "text"),
    Setting("log_level", None, "QIP_LOG_LEVEL", "DEBUG, INFO, WARNING or ERROR",
            "WARNING (INFO for qip run)"),
    Setting("base_url", None, "QIP_BASE_URL", "address of the web pages, used in links"),
    Setting("secret_key", None, "QIP_SECRET_KEY", "signing key", "a key file beside the database",
            secret=True),
    Setting("oidc", None, "QIP_OIDC", "OpenID Connect sign-in file (issuer, client id)",
            "no single sign-on: email links only", is_path=True),
    Setting("session_idle", None, "QIP_SESSION_IDLE", "web session ends after this idle time",
            "30m"),
    Setting("session_max", None, "QIP_SESSION_MAX", "web session ends this long after sign-in",
            "12h"),
    Setting("link_days", None, "QIP_LINK_DAYS", "days a link in a message stays valid", "14"),
    Setting("evidence_dir", None, "QIP_EVIDENCE_DIR", "folder of uploaded evidence files",
            "evidence/ beside a SQLite database", is_path=True),
    Setting("upload_limit", None, "QIP_UPLOAD_LIMIT", "largest evidence file accepted", "25MB"),
    Setting("api_rate", None, "QIP_API_RATE", "API requests a minute per caller (per server "
            "process)", "600"),
    Setting("api_max_body", None, "QIP_API_MAX_BODY", "largest API request body, in MB", "26"),
)
BY_KEY = {s.key: s for s in SETTINGS}
SETTINGS_ENV = "QIP_SETTINGS"


@dataclass(frozen=True)
class Value:
    """A setting's value and where it came from ("--db", "QIP_DATABASE_URL", "qip.toml", "default")."""

    setting: Setting
    value: str | None
    source: str


def settings_file(start: Path | None = None) -> tuple[Path | None, dict[str, Any]]:
    """``$QIP_SETTINGS``, else ``./qip.toml`` (its ``[qip]`` table), else ``./pyproject.toml``'s
    ``[tool.qip]``. Unknown keys are refused with the file and key, so a typo is not ignored."""
    folder = start or Path.cwd()
    named = os.environ.get(SETTINGS_ENV)
    candidates = [(Path(named), ("qip",))] if named else [
        (folder / "qip.toml", ("qip",)), (folder / "pyproject.toml", ("tool", "qip"))]
    for path, table_path in candidates:
        if not path.is_file():
            if named:
                raise InvalidDefinition(f"{SETTINGS_ENV}: {path} does not exist")
            continue
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InvalidDefinition(f"{path}: not valid TOML: {exc}") from None
        table: Any = document
        for part in table_path:
            table = table.get(part) if isinstance(table, dict) else None
        if table is None:
            if path.name == "pyproject.toml":
                continue
            raise InvalidDefinition(f"{path}: has no [{'.'.join(table_path)}] table; put the "
                                    "settings under [qip]")
        if not isinstance(table, dict):
            raise InvalidDefinition(f"{path}: [{'.'.join(table_path)}] must be a table")
        for key, value in table.items():
            where = f"{path}: [{'.'.join(table_path)}] {key}"
            if key not in BY_KEY:
                raise InvalidDefinition(f"{where}: unknown setting; known: {', '.join(BY_KEY)}")
            if BY_KEY[key].secret:
                raise InvalidDefinition(f"{where}: secrets do not belong in a settings file; set "
                                        f"{BY_KEY[key].env} in the environment instead")
            if not isinstance(value, str):
                raise InvalidDefinition(f'{where}: must be a string in quotes, e.g. {key} = "…"')
        return path, table
    return None, {}


def resolve(given: dict[str, tuple[str | None, bool]], start: Path | None = None) -> dict[str, Value]:
    """The value in force of each setting. ``given`` maps a key to (value, came from the command
    line) as the command line parser saw it (the environment is read here)."""
    path, table = settings_file(start)
    resolved: dict[str, Value] = {}
    for setting in SETTINGS:
        value, from_flag = given.get(setting.key, (None, False))
        if value is not None and from_flag and setting.flag:
            resolved[setting.key] = Value(setting, value, setting.flag)
        elif os.environ.get(setting.env):
            resolved[setting.key] = Value(setting, os.environ[setting.env], setting.env)
        elif path is not None and setting.key in table:
            raw = table[setting.key]
            if setting.is_path or (setting.key == "database" and "://" not in raw):
                raw = str((path.parent / raw).resolve()) if not Path(raw).is_absolute() else raw
            resolved[setting.key] = Value(setting, raw, str(path))
        else:
            resolved[setting.key] = Value(setting, None, "default")
    return resolved


def masked(value: Value) -> str:
    """A value fit to print: secrets hidden, passwords in URLs hidden."""
    from qip_flow.store.db import mask_secrets

    if value.value is None:
        return ""
    return "********" if value.setting.secret else mask_secrets(value.value)
