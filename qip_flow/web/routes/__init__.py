"""One module per page group. Each defines ``router`` (an ``APIRouter``), may define
``install(app, settings, runtime)``, and exports ``ROUTE_POLICY``: every route it adds, as
``(METHOD, path template)``, mapped to the ``Act`` value the policy is asked (``Act.VIEW.value``
…), ``"public"`` or ``"signed-in"``. ``create_app`` includes every module of this package;
tests/test_web_permissions.py fails for a route without an entry."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

PUBLIC = "public"
SIGNED_IN = "signed-in"


def route_modules() -> list[ModuleType]:
    """Every routes module, in name order."""
    return [importlib.import_module(f"{__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name)]
