"""The YAML loaders behind ``source.parse_yaml``: PyYAML's composer counting nodes, depth and
alias expansion as it goes. Kept apart so that a command served from the cache of checked
files (``config.cache``) never imports PyYAML."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from qip_flow.config.source import YamlLimits


class LimitExceeded(Exception):
    def __init__(self, problem: str, mark: yaml.Mark | None) -> None:
        super().__init__(problem)
        self.problem, self.mark = problem, mark


_CLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # LibYAML when installed


class _LimitedComposer(yaml.composer.Composer):
    """PyYAML's composer, counting nodes, depth and the size each alias expands to."""

    limits: YamlLimits  # set before composing (see parse)

    def compose_document(self) -> yaml.Node | None:
        self._depth, self._nodes, self._sizes = 0, 0, {}
        return super().compose_document()  # type: ignore[no-any-return]

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        limits = self.limits
        if self.check_event(yaml.AliasEvent):  # type: ignore[attr-defined]
            mark = self.peek_event().start_mark  # type: ignore[attr-defined]
            node = super().compose_node(parent, index)
            if id(node) not in self._sizes:
                raise LimitExceeded("an alias refers to a node that contains it; write the value out", mark)
            return node  # type: ignore[no-any-return]
        mark = self.peek_event().start_mark  # type: ignore[attr-defined]
        self._depth += 1
        self._nodes += 1
        if self._depth > limits.max_depth:
            raise LimitExceeded(f"nested more than {limits.max_depth} levels deep; flatten it", mark)
        if self._nodes > limits.max_nodes:
            raise LimitExceeded(f"more than {limits.max_nodes:,} values; split the file", mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        size = 1 + sum(self._sizes[id(child)][0] for child in children)
        if size > limits.max_expanded:
            raise LimitExceeded(f"its aliases expand to more than {limits.max_expanded:,} "
                                 "values (an alias bomb?); write the values out", mark)
        self._sizes[id(node)] = (size, node)  # the node is kept so its id stays unique
        return node  # type: ignore[no-any-return]


class FastLoader(_LimitedComposer, _CLoader):  # type: ignore[misc,valid-type]
    """LibYAML's parser (when installed) under the counting composer."""

    def __init__(self, stream: str) -> None:
        _CLoader.__init__(self, stream)
        yaml.composer.Composer.__init__(self)


class PureLoader(_LimitedComposer, yaml.SafeLoader):
    """The pure-Python loader (it words syntax errors better) under the counting composer."""

    def __init__(self, stream: str) -> None:
        yaml.SafeLoader.__init__(self, stream)


def parse(text: str, loader_class: Any, limits: YamlLimits, *,
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


def bad_date(node: yaml.Node | None) -> yaml.ScalarNode | None:
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
        found = bad_date(child)
        if found is not None:
            return found
    return None
