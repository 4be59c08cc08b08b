"""Standard ``logging`` for qip_flow: one line per event with its time and level, as text for a
terminal or as JSON lines for a log collector (``--log-format json``)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

LOGGER = "qip_flow"
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonLines(logging.Formatter):
    """One JSON object a line: time (UTC, ISO), level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(log_format: str | None, level: str | None, *, verbose: bool = False,
              quiet: bool = False) -> None:
    """Send qip_flow's log to stderr. ``--verbose`` shows DEBUG, ``--quiet`` only errors; the
    default is WARNING for one-off commands (their result is printed anyway)."""
    from qip_flow.errors import InvalidInput

    chosen = (log_format or "text").lower()
    if chosen not in ("text", "json"):
        raise InvalidInput(f"--log-format: '{log_format}' is not text or json")
    wanted = "DEBUG" if verbose else "ERROR" if quiet else (level or "WARNING").upper()
    if wanted not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise InvalidInput(f"QIP_LOG_LEVEL: '{level}' is not DEBUG, INFO, WARNING or ERROR")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if chosen == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    logger = logging.getLogger(LOGGER)
    logger.handlers[:] = [handler]
    logger.setLevel(wanted)
    logger.propagate = False


def raise_to_info() -> None:
    """Long-running commands (``qip run``) log each tick and dispatch unless ``--quiet``."""
    logger = logging.getLogger(LOGGER)
    if logger.level > logging.INFO and logger.level < logging.ERROR:
        logger.setLevel(logging.INFO)
