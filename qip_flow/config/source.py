"""Reading governance YAML with line numbers, and turning validation errors into messages that
name the file, the line and the path (``actions[2].owner``) a governance lead has to fix."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from qip_flow.errors import InvalidDefinition, InvalidInput

if TYPE_CHECKING:
    import yaml

Loc = Sequence[str | int]
M = TypeVar("M", bound=BaseModel)


def format_loc(loc: Loc) -> str:
    """``("actions", 2, "owner")`` → ``actions[2].owner``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


@dataclass
class YamlDocument:
    """A parsed YAML file that remembers where each value came from."""

    path: Path
    data: Any
    node: yaml.Node | None
    text: str

    @property
    def digest(self) -> str:
        """The content hash used as this file's version."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    def line_of(self, loc: Loc) -> int | None:
        """The 1-based line of the deepest node on ``loc`` that exists in the file."""
        import yaml

        node = self.node
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == str(part):
                        child = value
                        line = key.start_mark.line + 1
                        break
            elif (isinstance(node, yaml.SequenceNode) and isinstance(part, int)
                  and 0 <= part < len(node.value)):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line

    def where(self, loc: Loc) -> str:
        """``plans/qip.yaml:14 actions[2].owner``"""
        line = self.line_of(loc)
        at = f"{self.path}:{line}" if line else str(self.path)
        return f"{at} {format_loc(loc)}" if loc else at


@dataclass(frozen=True)
class YamlLimits:
    """How big a YAML file may be. Checked while the node tree is composed — before any Python
    object is built — so an alias bomb or a file of millions of nodes is refused in
    milliseconds instead of exhausting memory later."""

    max_bytes: int = 5 * 1024 * 1024
    max_nodes: int = 500_000
    #: nodes once every alias is expanded: what building objects and validating will visit
    max_expanded: int = 1_000_000
    max_depth: int = 64


LIMITS = YamlLimits()


def read_yaml(path: Path, *, error: type[InvalidInput] | type[InvalidDefinition],
              limits: YamlLimits = LIMITS) -> YamlDocument:
    """Parse one YAML file within ``limits``; a syntax error names the line and column."""
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise error(f"{path}: the file is {size / 1e6:.1f} MB; a file may be at most "
                        f"{limits.max_bytes / 1e6:.1f} MB: split it into several files")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read ({exc})") from None
    return parse_yaml(path, text, error=error, limits=limits)


def parse_yaml(path: Path, text: str, *, error: type[InvalidInput] | type[InvalidDefinition],
               limits: YamlLimits = LIMITS) -> YamlDocument:
    """Parse YAML text already read (from a file or the database) within ``limits``; ``path``
    names it in messages."""
    import yaml

    from qip_flow.config.yaml_loading import FastLoader, LimitExceeded, PureLoader, bad_date, parse

    try:
        try:
            node, data = parse(text, FastLoader, limits)
        except yaml.YAMLError:
            node, data = parse(text, PureLoader, limits)
    except LimitExceeded as exc:
        at = f"{path}:{exc.mark.line + 1}" if exc.mark else str(path)
        raise error(f"{at}: refused: {exc.problem}") from None
    except ValueError as exc:  # a well-formed but impossible value, e.g. 2026-02-30
        bad = bad_date(parse(text, PureLoader, limits, construct=False)[0])
        if bad is None:
            raise error(f"{path}: a value cannot be read ({exc})") from None
        at = f"{path}:{bad.start_mark.line + 1}"
        raise error(f"{at}: not a real date '{bad.value}' ({exc}); write it as "
                    "YYYY-MM-DD") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{at}: not valid YAML ({problem}); check indentation and quoting") from None
    return YamlDocument(path=path, data=data, node=node, text=text)


def describe_validation(doc: YamlDocument, exc: ValidationError) -> list[str]:
    """One line per pydantic error, each with file, line and path."""
    lines = []
    for err in exc.errors():
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against `qip schema`"
        lines.append(f"{doc.where(loc)}: {message}")
    return lines


def validate(
    doc: YamlDocument,
    model: type[M],
    *,
    error: type[InvalidInput] | type[InvalidDefinition],
    what: str,
) -> M:
    """Validate a whole document into ``model``; refuse the file with every problem listed."""
    if not isinstance(doc.data, dict):
        raise error(f"{doc.path}: expected a YAML mapping at the top of a {what}")
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        details = describe_validation(doc, exc)
        raise error(f"{doc.path}: this {what} has errors", details=details) from None
