"""qip_flow: a workflow engine for Quality Improvement Plans in adult social care."""

from pathlib import Path

__version__ = "0.1.0"

#: The folder holding the shipped ``workflows/`` and ``rules/`` (the repository root).
SHIPPED_CONFIG = Path(__file__).resolve().parent.parent
