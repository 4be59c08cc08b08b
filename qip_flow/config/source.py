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


class _LimitExceeded(Exception):
    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem, self.mark = problem, mark


_CLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # LibYAML when installed


class _LimitedComposer(yaml.composer.Composer):
    """PyYAML's composer, counting nodes, depth and the size each alias expands to."""

    limits: YamlLimits = LIMITS

    def compose_document(self) -> yaml.Node | None:
        self._depth, self._nodes, self._sizes = 0, 0, {}
        return super().compose_document()  # type: ignore[no-any-return]

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        limits = self.limits
        if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
            mark = self.peek_event().start_mark  # type: ignore[attr-defined]
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:
                raise _LimitExceeded("an alias refers to a node that contains it; write the value out", mark)
            return node  # type: ignore[no-any-return]
        mark = self.peek_event().start_mark  # type: ignore[attr-defined]
        self._depth += 1
        self._nodes += 1
        if self._depth > limits.max_depth:
            raise _LimitExceeded(f"nested more than {limits.max_depth} levels deep; flatten it", mark)
        if self._nodes > limits.max_nodes:
            raise _LimitExceeded(f"more than {limits.max_nodes:,} values; split the file", mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        size = 1 + sum(self._sizes[id(child)][0] for child in children)
        if size > limits.max_expanded:
            raise _LimitExceeded(f"its aliases expand to more than {limits.max_expanded:,} "
                                 "values (an alias bomb?); write the values out", mark)
        self._sizes[id(node)] = (size, node)  # the node is kept so its id stays unique
        return node  # type: ignore[no-any-return]


class _FastLoader(_LimitedComposer, _CLoader):  # type: ignore[misc,valid-type]
    """LibYAML's parser (when installed) under the counting composer."""

    def __init__(self, stream: str) -> None:
        _CLoader.__init__(self, stream)
        yaml.composer.Composer.__init__(self)


class _PureLoader(_LimitedComposer, yaml.SafeLoader):
    """The pure-Python loader (it words syntax errors better) under the counting composer."""

    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)


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
    try:
        try:
            node, data = _parse(text, _FastLoader, limits)
        except yaml.YAMLError:
            node, data = _parse(text, _PureLoader, limits)
    except _LimitExceeded as exc:
        at = f"{path}:{exc.mark.line + 1}" if exc.mark else str(path)
        raise error(f"{at}: refused: {exc.problem}") from None
    except ValueError as exc:  # a well-formed but impossible value, e.g. 2026-02-30
        bad = _bad_date(_parse(text, _PureLoader, limits, construct=False)[0])
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


def _parse(text: str, loader_class: Any, limits: YamlLimits, *,
           construct: bool = True) -> tuple[yaml.Node | None, Any]:
    """One pass: compose the node tree within ``limits`` (for line numbers too), then build
    the data from it."""
    loader = loader_class(text)
    loader.limits = limits
    try:
        node = loader.get_single_node()
        if not construct or node is None:
            return node, None
        return node, loader.construct_document(node)
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
