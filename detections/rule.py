"""Immutable rule models: what the loader produces and the compiler consumes.

These are plain frozen dataclasses (validation lives in :mod:`detections.loader`, where every
problem can be reported with its file position).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from detections.condition import Node

LEVELS = ("informational", "low", "medium", "high", "critical")
STATUSES = ("stable", "test", "experimental", "deprecated", "unsupported")
RELATED_TYPES = ("derived", "obsolete", "merged", "renamed", "similar")
CORRELATION_TYPES = ("event_count", "value_count", "temporal", "temporal_ordered")
# Sigma metadata keys every document kind accepts (rules, filters, correlations, new terms);
# each kind's allowed top-level keys extend this tuple.
META_KEYS = (
    "title",
    "id",
    "name",
    "status",
    "description",
    "references",
    "author",
    "date",
    "modified",
    "license",
)

#: An ATT&CK technique tag (``attack.t1611``, ``attack.t1552.007``).
TECHNIQUE = re.compile(r"^attack\.(t\d{4}(?:\.\d{3})?)$", re.IGNORECASE)
_GROUP_OR_SOFTWARE = re.compile(r"^attack\.[gs]\d{4}$", re.IGNORECASE)


def source_name(file: str, root: str, *, under_root: bool | None = None) -> str:
    """A short, machine-independent origin for alerts: ``root`` plus the path below it, else
    the bare file name. ``under_root`` says whether ``file`` lies in ``root`` (by default:
    whether ``root`` appears in its path).

    >>> source_name("/srv/klaxon/detections/rules/exec.yml", "detections/rules/")
    'detections/rules/exec.yml'
    >>> source_name("C:\\\\rules\\\\mine.yml", "detections/rules/")
    'mine.yml'
    """
    norm = file.replace("\\", "/")
    if under_root is None:
        under_root = root in norm
    if under_root:
        return root + norm.split(root)[-1]
    return norm.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class FieldMatch:
    """One ``field|modifiers: values`` entry of a selection (values already list-expanded)."""

    key: str  # as written, e.g. "user.username|expand"
    field: str  # as written without modifiers, e.g. "hostPath"
    path: str  # canonical (alias resolved), e.g. "podSpec.volumes.hostPath.path"
    modifiers: tuple[str, ...]
    values: tuple[Any, ...]
    line: int = 0
    col: int = 0


@dataclass(frozen=True, slots=True)
class Selection:
    """A named detection item: OR over alternatives, each an AND over field matches."""

    name: str
    alternatives: tuple[tuple[FieldMatch, ...], ...]
    line: int = 0
    col: int = 0


@dataclass(frozen=True, slots=True)
class FixtureCase:
    """One ``klaxon.tests`` entry: a partial event deep-merged over the base event."""

    name: str
    expect: str  # "hit" | "miss"
    event: dict[str, Any]
    line: int = 0
    #: named lists replaced for this test only (name, values), e.g. a filled-in cluster_networks
    lists: tuple[tuple[str, tuple[Any, ...]], ...] = ()


#: What an alert group can be keyed by (``klaxon.group.by``), see `detections.grouping`.
GROUP_BY = ("principal", "workload", "object", "namespace", "resource", "source_ip")


@dataclass(frozen=True, slots=True)
class GroupBy:
    """``klaxon.group``: the key and window of the rule's alert groups (`detections.grouping`)."""

    by: tuple[str, ...] = ()  # empty: the default for the rule's kind
    window: int | None = None  # seconds; None: the default window


@dataclass(frozen=True, slots=True)
class KlaxonBlock:
    """Our Sigma extension block."""

    summary: str | None = None
    mtmk: tuple[str, ...] = ()
    tests: tuple[FixtureCase, ...] = ()
    group: GroupBy | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A Sigma detection rule, validated."""

    title: str
    id: str
    detection: dict[str, Selection]
    condition: Node
    condition_text: str
    file: str
    line: int = 1
    name: str | None = None
    status: str | None = None
    description: str | None = None
    references: tuple[str, ...] = ()
    author: str | None = None
    date: str | None = None
    modified: str | None = None
    tags: tuple[str, ...] = ()
    logsource: dict[str, str] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()
    level: str | None = None
    related: tuple[dict[str, str], ...] = ()
    license: str | None = None
    klaxon: KlaxonBlock = field(default_factory=KlaxonBlock)
    source: str = ""  # short, machine-independent origin (see source_name)

    @property
    def techniques(self) -> tuple[str, ...]:
        """ATT&CK technique ids from tags, upper-cased (``attack.t1611`` -> ``T1611``).

        >>> from detections.condition import Ref
        >>> r = Rule("t", "i", {}, Ref("s"), "s", "f", tags=("attack.t1611", "attack.execution"))
        >>> r.techniques, r.tactics
        (('T1611',), ('execution',))
        """
        out = []
        for tag in self.tags:
            m = TECHNIQUE.match(tag)
            if m:
                out.append(m.group(1).upper())
        return tuple(out)

    @property
    def tactics(self) -> tuple[str, ...]:
        """ATT&CK tactic short names from tags (``attack.privilege-escalation``)."""
        return tuple(
            tag[len("attack.") :]
            for tag in self.tags
            if tag.lower().startswith("attack.")
            and not TECHNIQUE.match(tag)
            and not _GROUP_OR_SOFTWARE.match(tag)
        )


@dataclass(frozen=True, slots=True)
class Filter:
    """A Sigma meta-filter document: extra condition ANDed onto the named rules."""

    title: str
    id: str | None
    rules: tuple[str, ...]  # rule ids or names as written
    detection: dict[str, Selection]
    condition: Node
    condition_text: str
    file: str
    line: int = 1
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Correlation:
    """A Sigma correlation document, validated and kept for a stateful engine."""

    title: str
    id: str | None
    type: str
    rules: tuple[str, ...]
    group_by: tuple[str, ...]
    timespan_seconds: int
    timespan: str
    condition: dict[str, Any]
    generate: bool
    file: str
    line: int = 1
    name: str | None = None
    level: str | None = None
    tags: tuple[str, ...] = ()
    description: str | None = None
    author: str | None = None
    falsepositives: tuple[str, ...] = ()
    klaxon: KlaxonBlock | None = None  # summary template and Threat Matrix ids of the alert


@dataclass(frozen=True)
class RuleSet:
    """Everything loaded from a set of rule files: rules, filters, correlations and lints."""

    rules: tuple[Rule, ...]
    filters: tuple[Filter, ...] = ()
    correlations: tuple[Correlation, ...] = ()
    lints: tuple[Any, ...] = ()  # detections.errors.Lint
    lists: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def filters_for(self, rule: Rule) -> tuple[Filter, ...]:
        """Filters that name ``rule`` by id or name."""
        keys = {rule.id, rule.name} - {None}
        return tuple(f for f in self.filters if keys.intersection(f.rules))

    def find(self, key: str) -> Rule | None:
        """A rule by id, name, title or file stem (first match)."""
        for rule in self.rules:
            if key in (rule.id, rule.name, rule.title):
                return rule
        for rule in self.rules:
            if rule.file.rsplit("/", 1)[-1].rsplit(".", 1)[0] == key:
                return rule
        return None
