"""The stateless detection engine: evaluate compiled rules against canonical audit events.

Pure and synchronous: no I/O, no clocks. The only shared mutable state is caches (bounded,
safe to lose): a *plan* per index key ``(verb, objectRef.resource, objectRef.subresource)`` and
memos of field values. A plan holds the rules that key admits, each with its predicate
specialised for the key (comparisons of the indexed fields evaluated once and folded away,
:func:`detections.compiler.specialize`), plus the guard lookups (:mod:`detections.guards`)
that say, from one memoized lookup per field value, which guarded rules an event concerns and
which rules its user name or namespace rules out (``not filter_system`` blockers). So a
kubelet lease renewal is typically settled by a handful of dict lookups and no rule at all.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detections.compiler import (
    CompiledRule,
    Explanation,
    always,
    as_predicate,
    compile_rule,
    evidence,
    explain,
    specialize,
)
from detections.errors import RuleNotFoundError
from detections.fields import Cache, is_derived
from detections.guards import (
    NOTHING,
    Classifier,
    Lookup,
    Lookups,
    all_lookups,
    classifier,
    exact_test,
    field_lookup,
    nested_lookup,
    sibling_lookup,
)
from detections.index import INDEXED, WEAK_GUARD, admits, score
from detections.matchers import Predicate, text_test
from detections.rule import FieldMatch, Rule, RuleSet

#: Distinct index keys planned; events with further keys are checked against every rule.
MAX_CANDIDATE_KEYS = 4096
#: Remembered selections (lookup results -> candidates), all plans together.
MAX_SELECTIONS = 1 << 16

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


#: A compiled rule with its predicate for one index key (indexed comparisons folded away).
Entry = tuple[CompiledRule, Predicate]

#: Derived roots whose guarded fields are looked up together, in one walk.
_NESTED_ROOTS = ("podSpec",)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Candidates for one index key: rules always checked, and guarded rules behind lookups."""

    always: tuple[Entry, ...]  # the candidates when no lookup lets anything through
    #: (rule, test, guard number, block code, trust code, its condition's number)
    ordered: tuple[tuple[CompiledRule, Predicate, int, int, int, int], ...]
    guards: tuple[Lookup, ...]
    look: Lookups  # every guard's result, as one tuple
    conditions: tuple[Predicate, ...]  # the selections conditional trust depends on
    decided: tuple[int, ...]  # per condition, the code of a lookup that decides it (or none)
    #: lookup results (one per guard, in order) -> the candidates they select
    chosen: dict[tuple[frozenset[int] | None, ...], tuple[Entry, ...] | _Conditional]


class _Conditional:
    """Candidates that depend on where a request came from: rules some lookup reported as
    trusted by name, but only for requests whose ``conditions`` (``from_outside``) fail.
    Resolved per event by evaluating the conditions once, remembered per outcome."""

    __slots__ = ("chosen", "conditions", "rules")

    def __init__(
        self, rules: list[tuple[CompiledRule, Predicate, int]], conditions: tuple[Predicate, ...]
    ) -> None:
        self.rules = rules  # (rule, test, number of the condition that keeps it, or -1)
        self.conditions = conditions
        self.chosen: dict[tuple[bool, ...], tuple[Entry, ...]] = {}

    def __call__(self, event: dict[str, Any], cache: Cache) -> tuple[Entry, ...]:
        outcome = tuple([bool(condition(event, cache)) for condition in self.conditions])
        chosen = self.chosen.get(outcome)
        if chosen is None:
            chosen = self.chosen[outcome] = tuple(
                (c, test) for c, test, i in self.rules if i < 0 or outcome[i]
            )
        return chosen


#: Block code of a rule without blockers (never in a lookup result).
_UNBLOCKED = -(1 << 62)


def _block_code(number: int) -> int:
    """Lookups report "rule n is ruled out" as the negative number -n-1 (guard hits are n)."""
    return -number - 1


def _trust_code(number: int) -> int:
    """Lookups report "rule n is ruled out unless its trust condition holds" as -2**40-n."""
    return -(1 << 40) - number


def _exact_blocker(fm: FieldMatch) -> bool:
    """Whether text_test is exactly the comparison (so a passing text proves it holds)."""
    return fm.path not in INDEXED and "all" not in fm.modifiers and None not in fm.values


def _failing(fm: FieldMatch, lists: Mapping[str, Sequence[Any]]) -> Callable[[str], bool] | None:
    """The text test of an ``outside`` atom: the text fails the comparison without
    ``|outside`` (None, a presence atom, when that comparison has no text test)."""
    inner = text_test(tuple(m for m in fm.modifiers if m != "outside"), fm.values, lists)
    return None if inner is None else lambda t: not inner(t)


def _none(text: str) -> frozenset[int]:
    return NOTHING


class Engine:
    """Compiled rules plus the candidate index. Cheap to rebuild; safe to share between threads."""

    def __init__(self, ruleset: RuleSet, *, use_index: bool = True) -> None:
        self.ruleset = ruleset
        self.compiled: tuple[CompiledRule, ...] = tuple(
            compile_rule(rule, ruleset.filters_for(rule), ruleset.lists) for rule in ruleset.rules
        )
        self._by_rule = {c.rule.id: c for c in self.compiled}
        self._use_index = use_index
        self._classifiers: dict[str, Classifier] = {}
        self._presence: dict[str, set[int]] = {}
        self._blocks: dict[int, set[str]] = {}
        self._trust: dict[int, tuple[set[str], Predicate, tuple[Any, ...]]] = {}
        #: trust condition -> (field, code its lookup reports when the condition may hold)
        self._decided: dict[tuple[Any, ...], tuple[str, int]] = {}
        self._made: dict[tuple[Any, ...], Lookup] = {}
        self._textwise: dict[int, bool] = {}  # id(FieldMatch) -> has a text test
        self._selections = 0
        if use_index:
            self._build_guards()
        self._unindexed = self._plan(range(len(self.compiled)), None)
        self._plans: dict[IndexKey | None, _Plan] = {None: self._unindexed}

    def _build_guards(self) -> None:
        """Per looked-up field, one memoized classifier over every rule's atoms on that field:
        guard atoms report the rule number n, blockers report -n-1."""
        atoms: dict[str, list[tuple[int, Callable[[str], bool]]]] = {}
        for n, c in enumerate(self.compiled):
            for kind, path, arg in c.guard or ():
                test: Callable[[str], bool] | None = None
                if kind == "exact" and isinstance(arg, frozenset):
                    test = exact_test(arg)
                elif kind == "test" and isinstance(arg, FieldMatch):
                    test = text_test(arg.modifiers, arg.values, self.ruleset.lists)
                elif kind == "outside" and isinstance(arg, FieldMatch):
                    test = _failing(arg, self.ruleset.lists)
                atoms.setdefault(path, [])
                if test is None:
                    self._presence.setdefault(path, set()).add(n)  # any value lets it through
                else:
                    atoms[path].append((n, test))
            for fm in c.blockers:
                block = text_test(fm.modifiers, fm.values, self.ruleset.lists)
                if block is not None and _exact_blocker(fm):
                    atoms.setdefault(fm.path, []).append((_block_code(n), block))
                    self._blocks.setdefault(n, set()).add(fm.path)
            self._build_trust(n, c, atoms)
        self._classifiers = {path: classifier(entries) for path, entries in atoms.items()}

    def _build_trust(
        self, n: int, c: CompiledRule, atoms: dict[str, list[tuple[int, Callable[[str], bool]]]]
    ) -> None:
        """Atoms of rule ``n``'s conditional trust (one condition per rule, else none)."""
        if len({key for _, _, key in c.trust}) != 1:
            return
        for fm, condition, key in c.trust:
            test = text_test(fm.modifiers, fm.values, self.ruleset.lists)
            if test is not None and _exact_blocker(fm):
                atoms.setdefault(fm.path, []).append((_trust_code(n), test))
                paths = self._trust.setdefault(n, (set(), condition, key))[0]
                paths.add(fm.path)
        if n in self._trust and key not in self._decided:
            self._decide(key, atoms)

    def _decide(
        self, key: tuple[Any, ...], atoms: dict[str, list[tuple[int, Callable[[str], bool]]]]
    ) -> None:
        """A lookup atom for a trust condition that is one ``|outside`` comparison: reported
        when some text of the field fails it. Not reported, no string value fails, so the
        condition is false; reported, it may hold (the candidate's test then decides)."""
        if len(key) != 1 or len(key[0]) != 1:
            return
        ((path, modifiers, values),) = key[0]
        if "outside" not in modifiers or path in INDEXED:
            return
        failing = _failing(FieldMatch("", path, path, modifiers, values), self.ruleset.lists)
        if failing is not None:
            code = -(1 << 50) - len(self._decided)
            atoms.setdefault(path, []).append((code, failing))
            self._decided[key] = (path, code)

    def _kept(
        self, numbers: Iterable[int], known: dict[str, Any] | None
    ) -> tuple[list[tuple[int, Predicate, bool]], dict[str, set[int]]]:
        """Rules ``numbers`` that an event of index key ``known`` may match, as (rule number,
        test folded for the key, guarded), and the fields to look up (-> rules guarded on it)."""
        kept: list[tuple[int, Predicate, bool]] = []
        used: dict[str, set[int]] = {}
        for n in numbers:
            c = self.compiled[n]
            test: Predicate = c.test
            if known is not None:
                folded = specialize(c, known)
                if folded is False:
                    continue
                test = as_predicate(folded)
            if not self._use_index:
                kept.append((n, test, False))
            elif c.guard is not None and not c.guard:
                continue  # provably never matches
            elif c.guard is None or score(c.guard) >= WEAK_GUARD:
                kept.append((n, test, False))
                for path in self._blocks.get(n, set()) | self._trust.get(n, (set(),))[0]:
                    used.setdefault(path, set())  # worth a lookup: always a candidate otherwise
            else:
                kept.append((n, test, True))
                for _kind, path, _arg in c.guard:
                    used.setdefault(path, set()).add(n)
        return kept, used

    def _plan(self, numbers: Iterable[int], known: dict[str, Any] | None) -> _Plan:
        """The plan for rules ``numbers``, folded for ``known`` indexed fields when given.

        Rules with a useful guard are candidates only when a lookup lets them through; every
        rule is ruled out when a lookup reports one of its blockers.
        """
        kept, used = self._kept(numbers, known)
        if known is not None:  # what the lookups establish folds away too (they are fixed now)
            kept = [
                (n, as_predicate(folded), guarded)
                for n, _, guarded in kept
                for folded in [specialize(self.compiled[n], known, self._facts(n, guarded, used))]
                if folded is not False
            ]
        # A rule's blockers count wherever their field is looked up anyway.
        for n, _, _ in kept:  # trust conditions a lookup decides: look their field up
            paths, _, key = self._trust.get(n, (set(), always, ()))
            if used.keys() & paths and key in self._decided:
                used.setdefault(self._decided[key][0], set())
        conditions: dict[tuple[Any, ...], tuple[int, Predicate]] = {}
        ordered = []
        for n, test, guarded in kept:
            trust, number = _UNBLOCKED, -1
            paths, condition, key = self._trust.get(n, (set(), always, ()))
            if used.keys() & paths:
                trust = _trust_code(n)
                number = conditions.setdefault(key, (len(conditions), condition))[0]
            block = _block_code(n) if used.keys() & self._blocks.get(n, set()) else _UNBLOCKED
            ordered.append((self.compiled[n], test, n if guarded else -1, block, trust, number))
        guards: list[Lookup] = []
        nested: list[tuple[str, Classifier, frozenset[int]]] = []
        siblings: dict[str, list[tuple[str, Classifier, frozenset[int]]]] = {}
        for path in sorted(used):
            present = frozenset(used[path] & self._presence.get(path, set()))
            field = (path, self._classifiers.get(path) or _none, present)
            keys = path.split(".")
            if any(path == r or path.startswith(r + ".") for r in _NESTED_ROOTS) or len(keys) > 3:
                nested.append(field)  # pod spec fields, long paths into request bodies
            elif len(keys) in (2, 3) and not is_derived(path):
                siblings.setdefault(path.rpartition(".")[0], []).append(field)
            else:
                guards.append(self._shared(field_lookup, field))
        for fields in siblings.values():
            if len(fields) == 1:
                guards.append(self._shared(field_lookup, fields[0]))
            else:
                guards.append(self._shared(sibling_lookup, tuple(fields)))
        if nested:
            guards.append(self._shared(nested_lookup, tuple(nested)))
        return _Plan(
            tuple((c, t) for c, t, g, *_ in ordered if g < 0),
            tuple(ordered),
            tuple(guards),
            all_lookups(guards),
            tuple(condition for _, condition in conditions.values()),
            tuple(self._decided.get(key, ("", _UNBLOCKED))[1] for key in conditions),
            {},
        )

    def _facts(self, n: int, guarded: bool, looked: Iterable[str]) -> list[tuple[FieldMatch, bool]]:
        """What the lookups of a plan establish whenever they let rule ``n`` through: its
        guard's one atom holds (when the rule is guarded on it alone), and none of its
        blockers on the ``looked``-up fields holds. Only comparisons whose text test is
        exactly the comparison count."""
        facts: list[tuple[FieldMatch, bool]] = []
        c = self.compiled[n]
        if guarded and c.guard and len(c.guard) == 1:
            kind, _path, fm = c.guard[0]
            if (
                kind == "test"
                and isinstance(fm, FieldMatch)
                and _exact_blocker(fm)
                and self._text_wise(fm)
            ):
                facts.append((fm, True))
        paths = set(looked) & self._blocks.get(n, set())
        for fm in c.blockers:
            if (
                fm.path in paths
                and _exact_blocker(fm)
                and all(fm is not f for f, _ in facts)
                and self._text_wise(fm)
            ):
                facts.append((fm, False))
        return facts

    def _text_wise(self, fm: FieldMatch) -> bool:
        """Whether ``fm`` has a text test; memoized, since building one compiles its
        patterns and every plan (one per verb and resource seen) asks again."""
        known = self._textwise.get(id(fm))
        if known is None:
            test = text_test(fm.modifiers, fm.values, self.ruleset.lists)
            known = self._textwise[id(fm)] = test is not None
        return known

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

    def _shared(self, make: Callable[..., Lookup], spec: tuple[Any, ...]) -> Lookup:
        """One lookup object per distinct spec, shared by every plan that needs it."""
        key = (make, spec)
        found = self._made.get(key)
        if found is None:
            found = self._made[key] = make(*spec) if make is field_lookup else make(spec)
        return found

    def _lookup(self, key: IndexKey | None) -> _Plan:
        if key is None or not self._use_index or len(self._plans) >= MAX_CANDIDATE_KEYS:
            # Beyond the cap, a flood of new keys must not cost a plan build each: check the
            # event against every rule (guards and blockers still apply).
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
            known: dict[str, Any] = {"verb": key[0], "objectRef": {}}
            if key[1] is not None:
                known["objectRef"]["resource"] = key[1]
            if key[2] is not None:
                known["objectRef"]["subresource"] = key[2]
            numbers = [n for n, c in enumerate(self.compiled) if admits(c.constraints, lowered)]
            plan = self._plan(numbers, known)
        self._plans[key] = plan
        return plan

    def _select(self, event: dict[str, Any], cache: Cache) -> Sequence[Entry]:
        """Candidate rules for ``event`` with their predicates, in rule order."""
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
        guards = plan.guards
        if not guards:
            return plan.always
        # Lookup results are few distinct (memoized) sets, so the selection they make is
        # remembered: one tuple and one dict hit instead of set unions and a filter.
        found = plan.look(event, cache)
        chosen = plan.chosen.get(found)
        if chosen is None:
            chosen = self._choose(plan, found)
            if self._selections >= MAX_SELECTIONS:
                self._forget_selections()
            self._selections += 1
            plan.chosen[found] = chosen
        return chosen if isinstance(chosen, tuple) else chosen(event, cache)

    @staticmethod
    def _choose(
        plan: _Plan, found: tuple[frozenset[int] | None, ...]
    ) -> tuple[Entry, ...] | _Conditional:
        """The candidates that lookup results ``found`` select from ``plan``."""
        hits: frozenset[int] = NOTHING.union(*(f for f in found if f))
        if not hits:
            return plan.always
        rules = []
        for c, test, g, block, trust, number in plan.ordered:
            if (g >= 0 and g not in hits) or block in hits:
                continue
            if trust not in hits:
                number = -1
            elif plan.decided[number] != _UNBLOCKED:  # the condition's own lookup decides
                if plan.decided[number] not in hits:
                    continue  # trusted: the condition cannot hold
                number = -1
            rules.append((c, test, number))
        if any(number >= 0 for _, _, number in rules):
            return _Conditional(rules, plan.conditions)
        return tuple((c, test) for c, test, _ in rules)

    def _forget_selections(self) -> None:
        """Empty every plan's remembered selections (bounded memory; safe to lose)."""
        for plan in list(self._plans.values()):  # a copy: other threads may add plans
            plan.chosen.clear()
        self._selections = 0

    def candidates(
        self, event: dict[str, Any], cache: Cache | None = None
    ) -> Sequence[CompiledRule]:
        """Rules that might match ``event``, in rule order (all others provably cannot)."""
        return [c for c, _ in self._select(event, {} if cache is None else cache)]

    def evaluate(self, event: dict[str, Any]) -> list[Match]:
        """Every rule that matches ``event``, in rule order."""
        cache: Cache = {}
        # The common case of _select inline (the hot path: one call less per event): a
        # planned key and a remembered selection. Anything else (a new key or selection,
        # no objectRef, odd values) takes _select, which gives the same candidates.
        chosen: tuple[Entry, ...] | _Conditional | None = None
        ref = event.get("objectRef")
        if ref.__class__ is dict:
            try:
                plan = self._plans[(event.get("verb"), ref.get("resource"), ref.get("subresource"))]
            except (KeyError, TypeError):
                pass
            else:
                chosen = plan.chosen.get(plan.look(event, cache)) if plan.guards else plan.always
        entries: Sequence[Entry]
        if isinstance(chosen, tuple):
            entries = chosen
        elif chosen is None:
            entries = self._select(event, cache)
        else:
            entries = chosen(event, cache)
        out = []
        for c, test in entries:
            if test(event, cache):
                out.append(Match(c.rule, event, None, c))  # positional: the hot path
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
