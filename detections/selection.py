"""Which rules run: enable and disable rules by id, tag, level or status (pure).

A *selector* is ``kind:value`` with kind ``id``, ``tag``, ``level`` or ``status`` (a bare
value is an id, a rule name or a file stem). A rule or correlation is enabled unless

1. a ``disable`` selector matches it, or
2. its status is off by default (``deprecated``, ``unsupported``: Sigma's own advice),

and an ``enable`` selector that matches it overrides both (``enable: [id:...]`` turns one
deprecated rule back on; ``disable: [level:low], enable: [tag:attack.t1609]`` keeps the low
exec rules). A disabled rule that an enabled correlation (or another stateful detector named
in ``feeds``: new terms) reads stays in the engine to feed it
and is reported as such (whether it alerts on its own then follows the correlation's
``generate``, as for any base rule).

>>> sel = RuleSelection.parse(disable=["level:low", "tag:attack.t1046"], enable=["id:r2"])
>>> [str(s) for s in sel.disable]
['level:low', 'tag:attack.t1046']
>>> from detections.condition import Ref
>>> from detections.rule import Rule
>>> r = Rule("Port scan", "r1", {}, Ref("s"), "s", "f.yml", level="medium", tags=("attack.t1046",))
>>> sel.decide(r)
Decision(enabled=False, reason='disabled by tag:attack.t1046')
>>> sel.decide(Rule("Old", "r2", {}, Ref("s"), "s", "f.yml", level="low", status="deprecated"))
Decision(enabled=True, reason='enabled by id:r2')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from detections.rule import Correlation, Rule, RuleSet

__all__ = [
    "DEFAULT_OFF_STATUSES",
    "SELECTOR_KINDS",
    "Decision",
    "RuleSelection",
    "Selected",
    "Selector",
]

SelectorKind = Literal["id", "tag", "level", "status"]
SELECTOR_KINDS: tuple[SelectorKind, ...] = ("id", "tag", "level", "status")
#: Statuses whose rules are off unless enabled explicitly.
DEFAULT_OFF_STATUSES = frozenset({"deprecated", "unsupported"})
_LEVELS = frozenset({"informational", "low", "medium", "high", "critical"})
_STATUSES = frozenset({"stable", "test", "experimental", "deprecated", "unsupported"})


class _Selectable(Protocol):
    @property
    def id(self) -> str | None: ...
    @property
    def name(self) -> str | None: ...
    @property
    def file(self) -> str: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def level(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Selector:
    """One ``kind:value`` selector; values compare case-insensitively."""

    kind: SelectorKind
    value: str

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``id:...``, ``tag:...``, ``level:...``, ``status:...`` or a bare id.

        >>> Selector.parse("Level:High"), Selector.parse("7d2b6f0a")
        (Selector(kind='level', value='high'), Selector(kind='id', value='7d2b6f0a'))
        >>> Selector.parse("level:severe")
        Traceback (most recent call last):
        ...
        ValueError: level:severe: level is one of critical, high, informational, low, medium
        """
        raw = text.strip()
        kind, sep, value = raw.partition(":")
        if not sep:
            kind, value = "id", raw
        kind, value = kind.strip().lower(), value.strip()
        if kind not in SELECTOR_KINDS:
            known = ", ".join(SELECTOR_KINDS)
            raise ValueError(f"{raw}: unknown selector kind {kind!r} (known: {known})")
        if not value:
            raise ValueError(f"{raw}: empty {kind}")
        if kind in ("level", "status", "tag"):
            value = value.lower()
        allowed = {"level": _LEVELS, "status": _STATUSES}.get(kind)
        if allowed is not None and value not in allowed:
            raise ValueError(f"{raw}: {kind} is one of {', '.join(sorted(allowed))}")
        return cls(kind, value)

    def matches(self, rule: _Selectable, status: str | None) -> bool:
        """Whether this selector names ``rule`` (a `Rule` or a `Correlation`)."""
        if self.kind == "id":
            stem = rule.file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            return self.value in (rule.id, rule.name, stem)
        if self.kind == "tag":
            return self.value in (t.lower() for t in rule.tags)
        if self.kind == "level":
            return (rule.level or "medium").lower() == self.value
        return (status or "").lower() == self.value

    def __str__(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a rule runs, and the selector or default that decided it."""

    enabled: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Selected:
    """A rule set narrowed by a `RuleSelection`, with the decision for every rule."""

    ruleset: RuleSet
    decisions: dict[str, Decision]
    #: Disabled rules kept in the engine because an enabled correlation reads them.
    feeding: frozenset[str] = field(default_factory=frozenset)

    @property
    def disabled(self) -> int:
        """How many rules and correlations are off."""
        return sum(not d.enabled for d in self.decisions.values())


@dataclass(frozen=True, slots=True)
class RuleSelection:
    """Enable/disable selectors; the empty selection only turns default-off statuses off."""

    enable: tuple[Selector, ...] = ()
    disable: tuple[Selector, ...] = ()

    @classmethod
    def parse(cls, *, enable: Iterable[str] = (), disable: Iterable[str] = ()) -> RuleSelection:
        """From selector strings; `ValueError` naming the first bad one."""
        return cls(
            tuple(Selector.parse(s) for s in enable if s.strip()),
            tuple(Selector.parse(s) for s in disable if s.strip()),
        )

    def decide(self, rule: Rule | Correlation) -> Decision:
        """Enabled or not, and why (first matching enable, else disable, else default)."""
        status = rule.status if isinstance(rule, Rule) else None
        for sel in self.enable:
            if sel.matches(rule, status):
                return Decision(True, f"enabled by {sel}")
        for sel in self.disable:
            if sel.matches(rule, status):
                return Decision(False, f"disabled by {sel}")
        if status is not None and status.lower() in DEFAULT_OFF_STATUSES:
            return Decision(False, f"status {status.lower()} (off by default)")
        return Decision(True, "enabled")

    def apply(self, ruleset: RuleSet, feeds: Mapping[str, Iterable[str]] | None = None) -> Selected:
        """``ruleset`` without its disabled rules and correlations (see the module doc).

        ``feeds`` names other stateful detectors (title -> the rule ids or names they read,
        e.g. new terms detectors): their base rules are kept like those of correlations.
        Decisions are keyed by rule id (correlations by id, else name, else title).
        """
        decisions: dict[str, Decision] = {}
        for rule in ruleset.rules:
            decisions[rule.id] = self.decide(rule)
        correlations = []
        for corr in ruleset.correlations:
            decision = self.decide(corr)
            decisions[_key(corr)] = decision
            if decision.enabled:
                correlations.append(corr)
        readers: dict[str, str] = {}
        for corr in correlations:
            for ref in corr.rules:
                readers.setdefault(ref, f"correlation '{corr.title}'")
        for title, refs in (feeds or {}).items():
            for ref in refs:
                readers.setdefault(ref, f"'{title}'")
        rules, feeding = [], set()
        for rule in ruleset.rules:
            reader = readers.get(rule.id) or (readers.get(rule.name) if rule.name else None)
            if decisions[rule.id].enabled:
                rules.append(rule)
            elif reader is not None:
                rules.append(rule)
                feeding.add(rule.id)
                decisions[rule.id] = Decision(
                    False, f"{decisions[rule.id].reason}; still feeds {reader}"
                )
        narrowed = replace(ruleset, rules=tuple(rules), correlations=tuple(correlations))
        return Selected(narrowed, decisions, frozenset(feeding))

    def describe(self) -> str:
        """One line for logs and ``klaxon rules list``.

        >>> RuleSelection.parse(disable=["status:experimental"]).describe()
        'enable: -; disable: status:experimental; off by default: deprecated, unsupported'
        """
        enable = ", ".join(map(str, self.enable)) or "-"
        disable = ", ".join(map(str, self.disable)) or "-"
        off = ", ".join(sorted(DEFAULT_OFF_STATUSES))
        return f"enable: {enable}; disable: {disable}; off by default: {off}"


def _key(corr: Correlation) -> str:
    return corr.id or corr.name or corr.title


def parse_list(raw: str) -> Sequence[str]:
    """Comma-separated selectors (configuration values).

    >>> parse_list(" tag:attack.t1609, level:low ,")
    ['tag:attack.t1609', 'level:low']
    """
    return [p.strip() for p in raw.split(",") if p.strip()]
