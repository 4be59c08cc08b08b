"""qip_flow: a workflow engine for Quality Improvement Plans in adult social care."""

from importlib import resources
from pathlib import Path

__version__ = "0.1.0"


def _shipped_config() -> Path:
    """The folder holding the shipped ``workflows/``, ``rules/`` and ``examples/``: inside the
    package when installed from a wheel (``qip_flow/shipped``), else the repository root of a
    source checkout or an editable install."""
    packaged = Path(str(resources.files("qip_flow"))) / "shipped"
    if (packaged / "workflows").is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent


#: The folder holding the shipped ``workflows/``, ``rules/`` and ``examples/``.
SHIPPED_CONFIG = _shipped_config()
