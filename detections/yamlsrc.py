"""YAML documents as plain Python values plus a line/column for every key and item.

PyYAML's safe loader forgets positions once it builds dicts. We compose the node graph
ourselves so each value keeps its mark (keyed by its path inside the document), and so a
duplicate mapping key is an error instead of a silent overwrite.

>>> docs = load_documents("title: x\\ndetection:\\n  sel: {verb: get}\\n", "r.yml")
>>> docs[0].value["detection"]["sel"]
{'verb': 'get'}
>>> docs[0].mark(("detection", "sel", "verb"))
(3, 9)
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import yaml

from detections.errors import DetectionError, Problem

Path = tuple[str | int, ...]


@dataclass
class Document:
    """One YAML document: its value, the file it came from and where each path starts."""

    file: str
    value: Any
    start: tuple[int, int]
    key_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    value_marks: dict[Path, tuple[int, int]] = field(default_factory=dict)
    quoted: set[Path] = field(default_factory=set)

    def mark(self, path: Path, *, value: bool = False) -> tuple[int, int]:
        """1-based line and column of ``path``'s key (or value); the nearest parent if absent."""
        table = self.value_marks if value else self.key_marks
        probe = tuple(path)
        while probe:
            if probe in table:
                return table[probe]
            if not value and probe in self.value_marks:
                return self.value_marks[probe]
            probe = probe[:-1]
        return self.start

    def problem(
        self, path: Path, message: str, suggestion: str | None = None, *, value: bool = False
    ) -> Problem:
        """A :class:`Problem` positioned at ``path`` in this document."""
        line, col = self.mark(path, value=value)
        return Problem(self.file, line, col, dotted(path), message, suggestion)


def dotted(path: Path) -> str:
    """Render a document path the way authors write it: ``detection.selection[1].verb``.

    >>> dotted(("detection", "sel", 1, "verb"))
    'detection.sel[1].verb'
    """
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


#: libyaml's parser when PyYAML was built with it (same nodes and marks, several times faster).
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _pos(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, loader: Any, doc: Document, problems: list[Problem]) -> None:
        self.loader = loader
        self.doc = doc
        self.problems = problems

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.doc.value_marks.setdefault(path, _pos(node))
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # resolves `<<:` merge keys
            out: dict[Hashable, Any] = {}
            seen: dict[Hashable, tuple[int, int]] = {}
            for key_node, value_node in node.value:
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, Hashable) or isinstance(key, (list, dict)):
                    line, col = _pos(key_node)
                    self.problems.append(
                        Problem(
                            self.doc.file, line, col, dotted(path), "mapping key is not a scalar"
                        )
                    )
                    continue
                # Keys are rendered as text in paths; YAML `yes:` or `1:` keys stay usable.
                key_str = key if isinstance(key, str) else str(key)
                child = (*path, key_str)
                if key in seen:
                    line, col = _pos(key_node)
                    first = seen[key]
                    self.problems.append(
                        Problem(
                            self.doc.file,
                            line,
                            col,
                            dotted(child),
                            f"duplicate key '{key_str}' (first defined at line {first[0]})",
                        )
                    )
                    continue
                seen[key] = _pos(key_node)
                self.doc.key_marks[child] = _pos(key_node)
                out[key] = self.build(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                child = (*path, index)
                self.doc.key_marks[child] = _pos(item)
                items.append(self.build(item, child))
            return items
        if isinstance(node, yaml.ScalarNode) and node.style in ("'", '"'):
            self.doc.quoted.add(path)
        return self.loader.construct_object(node, deep=True)


def load_documents(text: str, file: str) -> list[Document]:
    """Parse every document of a YAML stream, raising RuleLoadError-ready problems as ValueError.

    Syntax errors and duplicate keys are collected; if any exist a :class:`YamlProblems` is raised.
    """
    problems: list[Problem] = []
    docs: list[Document] = []
    loader = _LOADER(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node() said there is one
                break
            doc = Document(file=file, value=None, start=_pos(node))
            doc.value = _Builder(loader, doc, problems).build(node, ())
            docs.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        what = exc.problem or exc.context or "invalid YAML"
        ctx = exc.context_mark
        if exc.problem and exc.context and ctx is not None and ctx is not mark:
            what += f" ({exc.context} started at line {ctx.line + 1}, column {ctx.column + 1})"
        problems.append(Problem(file, line, col, "", f"YAML syntax error: {what}"))
    except yaml.YAMLError as exc:
        problems.append(Problem(file, 0, 0, "", f"YAML error: {exc}"))
    finally:
        loader.dispose()
    if problems:
        raise YamlProblems(problems)
    return docs


class YamlProblems(DetectionError):
    """Internal: a file's YAML could not be read cleanly; carries its problems."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} YAML problems")
        self.problems = problems
