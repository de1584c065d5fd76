"""Where a key sits in a file people type: key path -> line, for errors that say where.

A validation error names a key path (``compressors.Ariel JGK/4.stages``); a person wants the
line. The document is composed by PyYAML (which reads JSON too) into nodes that carry their
line, once, and each path maps to the line of its key (or of its list item).
"""

from __future__ import annotations

from typing import Any

import yaml

KeyPath = tuple[str | int, ...]


def key_lines(text: str) -> dict[KeyPath, int]:
    """Line (1-based) of every key path in a YAML or JSON document; empty if it does not
    parse (the caller's parser then reports the syntax error)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[KeyPath, int] = {}
    if node is not None:
        _index(node, (), lines)
    return lines


def _index(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key: Any = key_node.value
            if isinstance(key, str):
                lines[(*path, key)] = key_node.start_mark.line + 1
                _index(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _index(item, (*path, i), lines)


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path`` or of its nearest ancestor that has one (None: unknown)."""
    p = tuple(path)
    while p and p not in lines:
        p = p[:-1]
    return lines.get(p)


def format_path(path: KeyPath) -> str:
    """``compressors[3].model`` from ``("compressors", 3, "model")``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def located(file: str, lines: dict[KeyPath, int], path: KeyPath, message: str) -> str:
    """``file:line: key.path: message`` (the line and path only where known)."""
    message = message.removeprefix("Value error, ")    # pydantic's prefix says nothing
    line = line_of(lines, path)
    where = f"{file}:{line}" if line is not None else file
    key = format_path(path)
    return f"{where}: {key}: {message}" if key else f"{where}: {message}"
