"""YAML read into values that remember where they came from (line and column).

PyYAML's composer builds a node graph in which an alias is a second reference to an
already-built node, so a "billion laughs" file composes to a handful of nodes. We walk
that graph into our own tree with a budget on the number of values produced: an alias
bomb (or a self-referencing alias) runs into the budget within milliseconds instead of
expanding into gigabytes. Merge keys (``<<: *defaults``) are supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

MAX_BYTES = 1 << 20  # a config file is a few kilobytes; refuse anything beyond 1 MiB
MAX_VALUES = 20_000  # values after alias expansion
MAX_DEPTH = 64

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Loc:
    line: int  # 1-based
    column: int  # 1-based

    def __str__(self) -> str:
        return f"{self.line}:{self.column}"


@dataclass(frozen=True)
class Node:
    loc: Loc


@dataclass(frozen=True)
class ScalarNode(Node):
    value: Scalar
    text: str  # the scalar as written, for messages


@dataclass(frozen=True)
class SeqNode(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class MapEntry:
    key_loc: Loc
    value: Node


@dataclass(frozen=True)
class MapNode(Node):
    entries: dict[str, MapEntry] = field(default_factory=dict)


class YamlError(Exception):
    """The file cannot be read as YAML (or as a safe amount of it)."""

    def __init__(self, message: str, loc: Loc | None = None, hint: str = "",
                 path: str = "") -> None:
        super().__init__(message)
        self.loc = loc
        self.hint = hint
        self.path = path  # the key path where it was found, when known


@dataclass
class _Walk:
    budget: int = MAX_VALUES
    open_nodes: set[int] = field(default_factory=set)  # ids of the nodes being converted
    duplicates: list[tuple[str, Loc, Loc]] = field(default_factory=list)
    bad_keys: list[tuple[str, Loc]] = field(default_factory=list)


def _loc(node: yaml.Node) -> Loc:
    return Loc(node.start_mark.line + 1, node.start_mark.column + 1)


_SCALARS = yaml.SafeLoader("")
# libyaml's parser when PyYAML was built with it (about 10x faster), the same nodes and marks
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _scalar(node: yaml.ScalarNode) -> Scalar:
    value = _SCALARS.construct_object(node, deep=False)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(node.value)  # timestamps and binary stay as written


def _convert(node: yaml.Node, walk: _Walk, depth: int, path: str = "") -> Node:
    walk.budget -= 1
    if walk.budget < 0:
        raise YamlError(
            f"the file expands to more than {MAX_VALUES} values through aliases",
            _loc(node),
            "this looks like an alias bomb or a self-referencing alias; write the values out",
        )
    if depth > MAX_DEPTH:
        raise YamlError(f"nesting deeper than {MAX_DEPTH} levels", _loc(node))
    if id(node) in walk.open_nodes:
        raise YamlError("an alias refers to a value that contains it", _loc(node),
                        "a self-referencing alias would never end; write the values out")
    walk.open_nodes.add(id(node))
    try:
        return _convert_node(node, walk, depth, path)
    finally:
        walk.open_nodes.discard(id(node))


# The tags a value may carry: what plain YAML resolves to by itself. Anything else (a
# custom !tag, !!python/..., !!binary, !!set) is refused where it is written.
_PLAIN_TAGS = {f"tag:yaml.org,2002:{t}" for t in
               ("str", "int", "float", "bool", "null", "timestamp", "map", "seq")}


def _tag(node: yaml.Node) -> str:
    return str(node.tag).replace("tag:yaml.org,2002:", "!!")


def _convert_node(node: yaml.Node, walk: _Walk, depth: int, path: str) -> Node:
    if node.tag not in _PLAIN_TAGS:
        raise YamlError(f"the YAML tag {_tag(node)} is not accepted", _loc(node),
                        "offsite reads plain values only; remove the tag", path)
    if isinstance(node, yaml.ScalarNode):
        return ScalarNode(_loc(node), _scalar(node), str(node.value))
    if isinstance(node, yaml.SequenceNode):
        return SeqNode(_loc(node), tuple(
            _convert(item, walk, depth + 1, f"{path}[{i}]") for i, item in enumerate(node.value)
        ))
    if not isinstance(node, yaml.MappingNode):
        raise YamlError(f"unsupported YAML node {type(node).__name__}", _loc(node))
    entries: dict[str, MapEntry] = {}
    merged: dict[str, MapEntry] = {}
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            for source in _merge_sources(value_node):
                converted = _convert(source, walk, depth + 1, path)
                for key, entry in getattr(converted, "entries", {}).items():
                    merged.setdefault(key, entry)
            continue
        if key_node.tag not in _PLAIN_TAGS:
            raise YamlError(f"the YAML tag {_tag(key_node)} is not accepted on a key",
                            _loc(key_node), "offsite reads plain values only; remove the tag", path)
        if not isinstance(key_node, yaml.ScalarNode):
            walk.bad_keys.append(("a key must be a plain name, not a list or mapping", _loc(key_node)))
            continue
        key = str(key_node.value)
        key_path = f"{path}.{key}" if path else key
        if key in entries:
            walk.duplicates.append((key_path, entries[key].key_loc, _loc(key_node)))
            continue
        entries[key] = MapEntry(_loc(key_node), _convert(value_node, walk, depth + 1, key_path))
    for key, entry in merged.items():
        entries.setdefault(key, entry)
    return MapNode(_loc(node), entries)


def _merge_sources(node: yaml.Node) -> list[yaml.MappingNode]:
    if isinstance(node, yaml.MappingNode):
        return [node]
    if isinstance(node, yaml.SequenceNode) and all(
        isinstance(n, yaml.MappingNode) for n in node.value
    ):
        return list(node.value)
    raise YamlError("a merge key (<<) must refer to a mapping or a list of mappings", _loc(node))


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and _scalar(node) is None


@dataclass(frozen=True)
class Document:
    root: Node
    duplicates: tuple[tuple[str, Loc, Loc], ...]  # key path, first seen, seen again
    bad_keys: tuple[tuple[str, Loc], ...]


def parse(text: str) -> Document:
    """Parse one YAML document. Raises YamlError for syntax errors and unsafe input."""
    if len(text.encode("utf-8", "replace")) > MAX_BYTES:
        raise YamlError(f"the file is larger than {MAX_BYTES // 1024} KiB", Loc(1, 1))
    try:
        documents = list(yaml.compose_all(text, Loader=_LOADER))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Loc(mark.line + 1, mark.column + 1) if mark else None
        problem = exc.problem or exc.context or "not valid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        raise YamlError(f"YAML syntax error: {problem}", loc) from exc
    except yaml.YAMLError as exc:
        raise YamlError(f"YAML error: {exc}") from exc
    documents = [d for d in documents if d is not None and not _is_null(d)]
    if not documents:
        raise YamlError(
            "the file is empty", Loc(1, 1), "start from examples/offsite.yaml in the offsite sources"
        )
    if len(documents) > 1:
        raise YamlError("the file holds more than one YAML document (---)", _loc(documents[1]))
    walk = _Walk()
    root = _convert(documents[0], walk, 0)
    return Document(root, tuple(walk.duplicates), tuple(walk.bad_keys))
