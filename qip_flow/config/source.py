"""Reading governance YAML with line numbers, and turning validation errors into messages that
name the file, the line and the path (``actions[2].owner``) a governance lead has to fix."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from qip_flow.errors import InvalidDefinition, InvalidInput

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


def read_yaml(path: Path, *, error: type[InvalidInput] | type[InvalidDefinition]) -> YamlDocument:
    """Parse one YAML file; a syntax error names the line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read ({exc})") from None
    return yaml_from_text(text, path, error=error)


def yaml_from_text(text: str, path: Path, *,
                   error: type[InvalidInput] | type[InvalidDefinition]) -> YamlDocument:
    """Parse YAML text kept elsewhere (a rules file a plan pinned); ``path`` names it in errors."""
    try:
        try:
            node, data = _parse(text, _Loader)
        except yaml.YAMLError:
            node, data = _parse(text, yaml.SafeLoader)  # the pure loader words errors better
    except ValueError as exc:  # a well-formed but impossible date, e.g. 2026-02-30
        bad = _bad_date(yaml.compose(text, Loader=yaml.SafeLoader))
        at = f"{path}:{bad.start_mark.line + 1}" if bad else str(path)
        shown = f" '{bad.value}'" if bad else ""
        raise error(f"{at}: not a real date{shown} ({exc}); write it as YYYY-MM-DD") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise error(f"{at}: not valid YAML ({problem}); check indentation and quoting") from None
    return YamlDocument(path=path, data=data, node=node, text=text)


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # LibYAML when installed


def _parse(text: str, loader_class: Any) -> tuple[yaml.Node | None, Any]:
    """One pass: compose the node tree (for line numbers), then build the data from it."""
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def _bad_date(node: yaml.Node | None) -> yaml.ScalarNode | None:
    """The first timestamp scalar PyYAML cannot turn into a date."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag == "tag:yaml.org,2002:timestamp":
            try:
                yaml.SafeLoader.construct_yaml_timestamp(yaml.SafeLoader(""), node)
            except ValueError:
                return node
        return None
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [v for _, v in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    for child in children:
        found = _bad_date(child)
        if found is not None:
            return found
    return None


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
