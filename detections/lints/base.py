"""What a lint sees (one loaded document) and what it returns (findings at document paths)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from detections.condition import Node
from detections.rule import Filter, FixtureCase, Rule, Selection
from detections.yamlsrc import Document
from detections.yamlsrc import Path as DocPath

#: (where in the document, message, suggestion)
Finding = tuple[DocPath, str, str | None]


@dataclass(frozen=True, slots=True)
class Subject:
    """One loaded document as the lints see it; ``kind`` is rule, filter, correlation or
    new_terms. Fields a kind does not have stay empty."""

    kind: str
    doc: Document
    packaged: bool = False
    selections: Mapping[str, Selection] = field(default_factory=dict)
    condition: Node | None = None
    #: Where the selections are: ``("detection",)`` in rules, ``("filter",)`` in filters.
    base: DocPath = ()
    tags: tuple[str, ...] = ()
    mtmk: tuple[str, ...] = ()
    summary: str | None = None
    level: str | None = None
    logsource: Mapping[str, str] = field(default_factory=dict)
    tests: tuple[FixtureCase, ...] = ()
    #: Plain field names the document reads outside selections, with their paths.
    fields: tuple[tuple[DocPath, str], ...] = ()
    #: The ids and names a filter applies to.
    targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Context:
    """What lints of one load share: the known field paths and every loaded rule."""

    known: frozenset[str]
    rules: Sequence[Rule] = ()


#: A lint: the findings of one code on one document.
LintFn = Callable[[Subject, Context], Iterable[Finding]]


def rule_subject(rule: Rule, doc: Document, packaged: bool) -> Subject:
    """A rule document as the lints see it."""
    return Subject(
        kind="rule",
        doc=doc,
        packaged=packaged,
        selections=rule.detection,
        condition=rule.condition,
        base=("detection",),
        tags=rule.tags,
        mtmk=rule.klaxon.mtmk,
        summary=rule.klaxon.summary,
        level=rule.level,
        logsource=rule.logsource,
        tests=rule.klaxon.tests,
    )


def filter_subject(flt: Filter, doc: Document) -> Subject:
    """A meta-filter document as the lints see it."""
    return Subject(
        kind="filter",
        doc=doc,
        selections=flt.detection,
        condition=flt.condition,
        base=("filter",),
        targets=flt.rules,
    )
