"""Imports point down the picture in DESIGN.md: cli, web → services → workflow / decide /
notify → store, config. The workflow asks the rules through the decide-level judge the services
hand it, so no module below services imports a service (or the runtime, which builds them)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import qip_flow

PACKAGE = Path(qip_flow.__file__).parent
UPWARD = ("qip_flow.services", "qip_flow.runtime", "qip_flow.cli", "qip_flow.web")


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """Every module a file imports, anywhere in it (top level, in functions, under
    TYPE_CHECKING), with its line; relative imports resolved against its package."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def upward_imports(layer: str) -> list[str]:
    out = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, module in imported_modules(path):
            if module.startswith(UPWARD):
                out.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("layer", ["workflow", "decide", "store", "config"])
def test_lower_layers_import_no_service_and_no_runtime(layer: str) -> None:
    """Nothing in workflow/, decide/, store/ or config/ imports services, the runtime or a
    layer above them — not even inside a function."""
    assert upward_imports(layer) == []


def test_the_checker_sees_imports_inside_functions(tmp_path: Path) -> None:
    """The check would catch the call-time import that guards.py used to make."""
    sample = PACKAGE / "workflow" / "guards.py"
    source = sample.read_text(encoding="utf-8")
    planted = tmp_path / "qip_flow" / "workflow" / "planted.py"
    planted.parent.mkdir(parents=True)
    planted.write_text(source + "\n\ndef f():\n    from ..services.assess import reassess\n")
    modules = [m for _, m in imported_modules(planted, tmp_path)]
    assert "qip_flow.services.assess.reassess" in modules
