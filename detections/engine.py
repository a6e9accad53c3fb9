"""The stateless detection engine: evaluate compiled rules against canonical audit events.

Pure and synchronous: no I/O, no clocks, no shared mutable state except a bounded cache of
candidate rule lists keyed by an event's ``(verb, objectRef.resource, objectRef.subresource)``,
so a kubelet lease update is only checked against the few rules that could match it.

>>> from detections.loader import load_rules
>>> rs = load_rules([], texts={"r.yml": '''
... title: Secrets listed
... id: 6f1c2d44-5b1e-4c1a-9d3e-2b7a8c9d0e1f
... detection:
...   selection: {verb: list, objectRef.resource: secrets}
...   condition: selection
... '''})
>>> engine = Engine(rs)
>>> [m.rule.title for m in engine.evaluate({"verb": "list", "objectRef": {"resource": "secrets"}})]
['Secrets listed']
>>> engine.evaluate({"verb": "update", "objectRef": {"resource": "leases"}})
[]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from detections.compiler import CompiledRule, Explanation, compile_rule, evidence, explain
from detections.errors import RuleNotFoundError
from detections.fields import compile_path
from detections.index import admits
from detections.matchers import text_source
from detections.rule import Rule, RuleSet

#: Distinct index keys remembered; beyond this, candidates are computed per event (still correct).
MAX_CANDIDATE_KEYS = 4096

IndexKey = tuple[Any, Any, Any]


class Match:
    """A rule that fired on an event, with the field values that made it fire.

    ``Match(rule, event, matched_fields)``. The engine passes the compiled rule instead of
    the fields, and the evidence is then worked out on first access: most matches of
    informational base rules never become alerts, so they never pay for it.
    """

    __slots__ = ("_compiled", "_fields", "event", "rule")

    def __init__(
        self,
        rule: Rule,
        event: dict[str, Any],
        matched_fields: dict[str, Any] | None = None,
        *,
        compiled: CompiledRule | None = None,
    ) -> None:
        self.rule = rule
        self.event = event
        self._fields = matched_fields
        self._compiled = compiled

    @property
    def matched_fields(self) -> dict[str, Any]:
        """Field path -> event value for the comparisons that made the rule fire."""
        if self._fields is None:
            self._fields = evidence(self._compiled, self.event) if self._compiled else {}
        return self._fields

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Match):
            return NotImplemented
        return (self.rule, self.event, self.matched_fields) == (
            other.rule,
            other.event,
            other.matched_fields,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Match(rule={self.rule.title!r}, auditID={self.event.get('auditID')!r})"


GuardTable = tuple[str, Callable[..., tuple[str, ...]], dict[str, frozenset[int]], frozenset[int]]
#: Guard tables under one root, skipped together when the root is absent (e.g. no pod spec).
GuardGroup = tuple[Callable[..., tuple[Any, ...]] | None, tuple[GuardTable, ...]]

#: Derived roots whose absence empties every field below them.
_GUARD_ROOTS = ("podSpec",)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Candidates for one index key: rules always checked, and guarded rules behind lookups."""

    always: tuple[CompiledRule, ...]
    ordered: tuple[tuple[CompiledRule, int | None], ...]  # (rule, guard position or None)
    guards: tuple[GuardGroup, ...]


def _plan(rules: Sequence[CompiledRule], use_guards: bool) -> _Plan:
    ordered: list[tuple[CompiledRule, int | None]] = []
    exact: dict[str, dict[str, set[int]]] = {}
    texty: dict[str, set[int]] = {}
    for pos, c in enumerate(rules):
        if not use_guards or c.guard is None:
            ordered.append((c, None))
            continue
        if not c.guard:
            continue  # provably never matches
        ordered.append((c, pos))
        for kind, path, values in c.guard:
            if kind == "exact" and values is not None:
                table = exact.setdefault(path, {})
                for v in values:
                    table.setdefault(v, set()).add(pos)
            else:
                texty.setdefault(path, set()).add(pos)
    groups: dict[str | None, list[GuardTable]] = {}
    for path in sorted(set(exact) | set(texty)):
        slot, compute = text_source(path)
        lookup = {v: frozenset(ps) for v, ps in exact.get(path, {}).items()}
        root = next((r for r in _GUARD_ROOTS if path == r or path.startswith(r + ".")), None)
        entry = (slot, compute, lookup, frozenset(texty.get(path, ())))
        groups.setdefault(root, []).append(entry)
    guards = tuple(
        (compile_path(root) if root is not None else None, tuple(tables))
        for root, tables in groups.items()
    )
    always = tuple(c for c, g in ordered if g is None)
    return _Plan(always, tuple(ordered), guards)


class Engine:
    """Compiled rules plus the candidate index. Cheap to rebuild; safe to share between threads."""

    def __init__(self, ruleset: RuleSet, *, use_index: bool = True) -> None:
        self.ruleset = ruleset
        self.compiled: tuple[CompiledRule, ...] = tuple(
            compile_rule(rule, ruleset.filters_for(rule), ruleset.lists) for rule in ruleset.rules
        )
        self._by_rule = {c.rule.id: c for c in self.compiled}
        self._use_index = use_index
        self._unindexed = _plan(self.compiled, use_index)
        self._plans: dict[IndexKey | None, _Plan] = {None: self._unindexed}

    @classmethod
    def from_paths(
        cls,
        paths: Iterable[str | os.PathLike[str]] | None = None,
        lists: Iterable[str | os.PathLike[str]] = (),
    ) -> Engine:
        """Load and compile rules; raises RuleLoadError (the caller keeps its old engine)."""
        from detections.loader import load_rules

        return cls(load_rules(paths, lists))

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules this engine evaluates."""
        return self.ruleset.rules

    def _lookup(self, key: IndexKey | None) -> _Plan:
        if key is None or not self._use_index:
            return self._unindexed
        try:
            hash(key)
        except TypeError:
            return self._unindexed  # a list or mapping where a string belongs: check everything
        if not all(v is None or isinstance(v, str) for v in key):
            plan = self._unindexed
        else:
            lowered = (
                key[0].lower() if isinstance(key[0], str) else None,
                key[1].lower() if isinstance(key[1], str) else None,
                key[2].lower() if isinstance(key[2], str) else None,
            )
            plan = _plan([c for c in self.compiled if admits(c.constraints, lowered)], True)
        if len(self._plans) < MAX_CANDIDATE_KEYS:
            self._plans[key] = plan
        return plan

    def candidates(
        self, event: dict[str, Any], cache: dict[str, Any] | None = None
    ) -> Sequence[CompiledRule]:
        """Rules that might match ``event``, in rule order (all others provably cannot)."""
        ref = event.get("objectRef")
        key: IndexKey | None
        if ref.__class__ is dict:
            key = (event.get("verb"), ref.get("resource"), ref.get("subresource"))
        elif ref is None:
            if "objectRef.resource" in event or "objectRef.subresource" in event:
                key = None  # a flattened dotted key: let the walkers find it
            else:
                key = (event.get("verb"), None, None)
        else:
            key = None
        try:
            plan = self._plans[key]
        except (KeyError, TypeError):
            plan = self._lookup(key)
        if not plan.guards:
            return plan.always
        if cache is None:
            cache = {}
        hits: frozenset[int] | None = None
        for root, tables in plan.guards:
            if root is not None and not root(event, cache):
                continue
            for slot, compute, table, texty in tables:
                texts = cache.get(slot)
                if texts is None:
                    texts = cache[slot] = compute(event, cache)
                if not texts:
                    continue
                if texty:
                    hits = texty if hits is None else hits | texty
                for t in texts:
                    found = table.get(t)
                    if found is not None:
                        hits = found if hits is None else hits | found
        if hits is None:
            return plan.always
        return [c for c, pos in plan.ordered if pos is None or pos in hits]

    def evaluate(self, event: dict[str, Any]) -> list[Match]:
        """Every rule that matches ``event``, in rule order."""
        cache: dict[str, Any] = {}
        out = []
        for c in self.candidates(event, cache):
            if c.test(event, cache):
                out.append(Match(c.rule, event, compiled=c))
        return out

    def evaluate_batch(self, events: Sequence[dict[str, Any]]) -> list[Match]:
        """Matches of every event, in event order then rule order."""
        out: list[Match] = []
        for event in events:
            out.extend(self.evaluate(event))
        return out

    def compiled_rule(self, key: str) -> CompiledRule:
        """The compiled rule for an id, name, title or file stem."""
        rule = self.ruleset.find(key)
        if rule is None:
            raise RuleNotFoundError(f"no rule {key!r} is loaded")
        return self._by_rule[rule.id]

    def explain(self, key: str, event: dict[str, Any]) -> Explanation:
        """Field-by-field account of one rule against one event."""
        return explain(self.compiled_rule(key), event)
