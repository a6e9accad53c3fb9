"""Compile rules into closures once; explain a rule against one event (slow path).

A compiled rule is a predicate ``(event, cache) -> bool`` built from field predicates
(:mod:`detections.matchers`), selection ORs/ANDs and the condition tree; filters that name the
rule are ANDed on. Nothing is evaluated with ``eval``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from detections import condition as cond
from detections.fields import Cache, Getter, compile_path
from detections.index import (
    INDEXED,
    Atom,
    Constraints,
    blockers,
    constraints,
    guard,
    trust_blockers,
    without_false,
)
from detections.matchers import Predicate, compile_match
from detections.matchers import never as never_matches
from detections.rule import FieldMatch, Filter, Rule, Selection


@dataclass(frozen=True, slots=True)
class CompiledField:
    """One field comparison and its predicate."""

    match: FieldMatch
    test: Predicate
    leaves: Getter


@dataclass(frozen=True, slots=True)
class CompiledSelection:
    """A selection's alternatives (each an AND of fields) and its combined predicate."""

    selection: Selection
    alternatives: tuple[tuple[CompiledField, ...], ...]
    test: Predicate


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """A meta-filter applied to a rule."""

    filter: Filter
    selections: Mapping[str, CompiledSelection]
    test: Predicate


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready for the engine."""

    rule: Rule
    selections: Mapping[str, CompiledSelection]
    filters: tuple[CompiledFilter, ...]
    test: Predicate
    constraints: Constraints
    guard: list[Atom] | None = None
    #: Comparisons any one of which, when it holds, rules the rule out (its filters included).
    blockers: tuple[FieldMatch, ...] = ()
    #: Comparisons that rule the rule out unless a selection holds (conditional trust), with
    #: that selection's predicate and a key equal for equal selections.
    trust: tuple[tuple[FieldMatch, Predicate, tuple[Any, ...]], ...] = ()


def _all(preds: Sequence[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda e, c: a(e, c) and b(e, c)
    if len(preds) == 3:
        a, b, d = preds
        return lambda e, c: a(e, c) and b(e, c) and d(e, c)
    items = tuple(preds)

    def every(e: dict[str, Any], c: Cache) -> bool:
        for p in items:  # noqa: SIM110 - a plain loop is faster than all() on a generator
            if not p(e, c):
                return False
        return True

    return every


def _any(preds: Sequence[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda e, c: a(e, c) or b(e, c)
    items = tuple(preds)

    def some(e: dict[str, Any], c: Cache) -> bool:
        for p in items:  # noqa: SIM110 - a plain loop is faster than any() on a generator
            if p(e, c):
                return True
        return False

    return some


#: A predicate, or its value when it is already known without looking at the event.
Folded = Predicate | bool


def always(event: dict[str, Any], cache: Cache) -> bool:
    """The predicate of a rule that matches every event of its index key."""
    return True


def never(event: dict[str, Any], cache: Cache) -> bool:
    """The predicate of a condition that can never hold."""
    return False


def as_predicate(folded: Folded) -> Predicate:
    """A folded value as a predicate."""
    if isinstance(folded, bool):
        return always if folded else never
    return folded


def fold_all(parts: Sequence[Folded]) -> Folded:
    """AND with constants folded away (False wins, True drops out)."""
    preds: list[Predicate] = []
    for p in parts:
        if isinstance(p, bool):
            if not p:
                return False
        else:
            preds.append(p)
    return _all(preds) if preds else True


def fold_any(parts: Sequence[Folded]) -> Folded:
    """OR with constants folded away (True wins, False drops out)."""
    preds: list[Predicate] = []
    for p in parts:
        if isinstance(p, bool):
            if p:
                return True
        else:
            preds.append(p)
    return _any(preds) if preds else False


def _field_order(cf: CompiledField) -> int:
    """Cheap, selective comparisons first: indexed fields, then plain top-level ones."""
    if cf.match.path in INDEXED:
        return 0
    return 1 if not cf.match.modifiers else 2


def compile_selections(
    selections: Mapping[str, Selection], lists: Mapping[str, Sequence[Any]]
) -> dict[str, CompiledSelection]:
    """Compile every selection of a rule or filter."""
    out = {}
    for name, sel in selections.items():
        alts = []
        for alt in sel.alternatives:
            fields = [
                CompiledField(
                    fm,
                    compile_match(fm.path, fm.modifiers, fm.values, lists),
                    compile_path(fm.path),
                )
                for fm in alt
            ]
            fields.sort(key=_field_order)
            alts.append(tuple(fields))
        # a comparison over only empty lists is the constant False (see index.without_false)
        test = as_predicate(
            fold_any(
                [
                    fold_all([False if f.test is never_matches else f.test for f in alt])
                    for alt in alts
                ]
            )
        )
        out[name] = CompiledSelection(sel, tuple(alts), test)
    return out


def fold_condition(node: cond.Node, selections: Mapping[str, Folded]) -> Folded:
    """Combine (possibly constant) selection results as the condition tree says."""
    if isinstance(node, cond.Ref):
        return selections[node.name]
    if isinstance(node, cond.Not):
        inner = fold_condition(node.item, selections)
        if isinstance(inner, bool):
            return not inner
        return lambda e, c: not inner(e, c)
    parts = [fold_condition(i, selections) for i in node.items]
    if isinstance(node, cond.And):
        # Positive terms first: `selection and not filter` stops early on most events.
        return fold_all(
            [p for i, p in zip(node.items, parts, strict=True) if not isinstance(i, cond.Not)]
            + [p for i, p in zip(node.items, parts, strict=True) if isinstance(i, cond.Not)]
        )
    if isinstance(node, cond.Or):
        return fold_any(parts)
    need = node.count - sum(1 for p in parts if p is True)
    items = tuple(p for p in parts if not isinstance(p, bool))
    if need <= 0:
        return True
    if need > len(items):
        return False
    return lambda e, c: sum(1 for p in items if p(e, c)) >= need


def compile_condition(node: cond.Node, selections: Mapping[str, CompiledSelection]) -> Predicate:
    """Turn a condition tree into one predicate over the compiled selections."""
    return as_predicate(fold_condition(node, {n: s.test for n, s in selections.items()}))


def _fold_selection(
    cs: CompiledSelection, known: dict[str, Any], facts: Sequence[tuple[FieldMatch, bool]]
) -> Folded:
    alts: list[Folded] = []
    for alt in cs.alternatives:
        fields: list[Folded] = []
        for f in alt:
            if f.match.path in INDEXED and "fieldref" not in f.match.modifiers:
                fields.append(bool(f.test(known, {})))
            elif any(f.match is fm for fm, _ in facts):
                # what the guard lookups established
                fields.append(next(holds for fm, holds in facts if f.match is fm))
            elif f.test is never_matches:
                fields.append(False)  # over empty lists only: a rule waiting on its list
            else:
                fields.append(f.test)
        alts.append(fold_all(fields))
    return fold_any(alts)


def specialize(
    compiled: CompiledRule, known: dict[str, Any], facts: Sequence[tuple[FieldMatch, bool]] = ()
) -> Folded:
    """The rule's predicate for events whose indexed fields are those of ``known``, and for
    which the comparisons in ``facts`` are known to hold (True) or not (False).

    Comparisons of ``verb``, ``objectRef.resource`` and ``objectRef.subresource`` read nothing
    else, so for one index key they are constants: they are evaluated once here and folded
    out, leaving only the comparisons that depend on the rest of the event (or a constant when
    the key alone decides the rule).

    >>> from detections.loader import load_rules
    >>> rs = load_rules([], texts={"r.yml": '''
    ... title: Secrets listed
    ... id: 6f1c2d44-5b1e-4c1a-9d3e-2b7a8c9d0e1f
    ... detection:
    ...   selection: {verb: [list, watch], objectRef.resource: secrets}
    ...   condition: selection
    ... '''})
    >>> rule = compile_rule(rs.rules[0], (), rs.lists)
    >>> specialize(rule, {"verb": "LIST", "objectRef": {"resource": "secrets"}})
    True
    >>> specialize(rule, {"verb": "get", "objectRef": {"resource": "secrets"}})
    False
    """
    parts = [
        fold_condition(
            compiled.rule.condition,
            {n: _fold_selection(cs, known, facts) for n, cs in compiled.selections.items()},
        )
    ]
    for flt in compiled.filters:
        fsel = {n: _fold_selection(cs, known, facts) for n, cs in flt.selections.items()}
        parts.append(fold_condition(flt.filter.condition, fsel))
    return fold_all(parts)


def compile_rule(
    rule: Rule, filters: Sequence[Filter], lists: Mapping[str, Sequence[Any]]
) -> CompiledRule:
    """Compile a rule and the filters that apply to it."""
    selections = compile_selections(rule.detection, lists)
    test = compile_condition(rule.condition, selections)
    false = frozenset(n for n, cs in selections.items() if cs.test is never)
    cfilters = []
    filter_false = []
    for flt in filters:
        fsel = compile_selections(flt.detection, lists)
        cfilters.append(CompiledFilter(flt, fsel, compile_condition(flt.condition, fsel)))
        filter_false.append(frozenset(n for n, cs in fsel.items() if cs.test is never))
    if cfilters:
        test = _all([test, *(f.test for f in cfilters)])
    conditions = [(without_false(rule.condition, false), rule.detection, selections)] + [
        (without_false(f.filter.condition, ff), f.filter.detection, f.selections)
        for f, ff in zip(cfilters, filter_false, strict=True)
    ]
    return CompiledRule(
        rule,
        selections,
        tuple(cfilters),
        test,
        constraints(rule.condition, rule.detection),
        guard(rule.condition, rule.detection),
        tuple(fm for node, detection, _ in conditions for fm in blockers(node, detection)),
        tuple(
            (fm, compiled[name].test, _selection_key(compiled[name].selection))
            for node, detection, compiled in conditions
            for fm, name in trust_blockers(node, detection)
        ),
    )


def _selection_key(sel: Selection) -> tuple[Any, ...]:
    """Equal for selections that make the same comparisons (wherever they are written)."""
    return tuple(tuple((f.path, f.modifiers, f.values) for f in alt) for alt in sel.alternatives)


# --- explanations and evidence ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldResult:
    """One field comparison against one event."""

    key: str
    path: str
    matched: bool
    values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class SelectionResult:
    """A selection against one event: per alternative, per field."""

    name: str
    matched: bool
    alternatives: tuple[tuple[FieldResult, ...], ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why a rule did or did not match an event."""

    rule: Rule
    matched: bool
    condition_matched: bool
    selections: tuple[SelectionResult, ...]
    filters: tuple[tuple[str, bool, tuple[SelectionResult, ...]], ...]

    def render(self) -> str:
        """Human-readable, one line per comparison."""
        lines = [
            f"rule {self.rule.title} ({self.rule.id}): {'MATCH' if self.matched else 'no match'}",
            f"condition: {self.rule.condition_text} -> {self.condition_matched}",
        ]
        lines += _render_selections(self.selections, "  ")
        for title, applies, sels in self.filters:
            lines.append(f"filter {title}: {'passes' if applies else 'suppresses the match'}")
            lines += _render_selections(sels, "  ")
        return "\n".join(lines)

    def failed_selections(self) -> list[str]:
        """Names of selections that did not match."""
        return [s.name for s in self.selections if not s.matched]


def _render_selections(sels: Sequence[SelectionResult], indent: str) -> list[str]:
    lines = []
    for s in sels:
        lines.append(f"{indent}{s.name}: {'matched' if s.matched else 'not matched'}")
        for ai, alt in enumerate(s.alternatives):
            prefix = indent * 2
            if len(s.alternatives) > 1:
                lines.append(f"{prefix}alternative {ai + 1}:")
                prefix += indent
            for f in alt:
                mark = "✓" if f.matched else "✗"
                shown = _show(f.values)
                alias = f" (read from {f.path})" if f.key.split("|")[0] != f.path else ""
                lines.append(f"{prefix}{mark} {f.key}{alias}: event has {shown}")
    return lines


def _show(values: tuple[Any, ...]) -> str:
    if not values:
        return "nothing (field absent)"
    text = repr(values[0]) if len(values) == 1 else repr(list(values))
    return text if len(text) <= 200 else text[:197] + "..."


def _explain_selections(
    selections: Mapping[str, CompiledSelection], event: dict[str, Any], cache: Cache
) -> tuple[SelectionResult, ...]:
    out = []
    for name, cs in selections.items():
        alts = []
        for alt in cs.alternatives:
            alts.append(
                tuple(
                    FieldResult(
                        f.match.key,
                        f.match.path,
                        f.test(event, cache),
                        f.leaves(event, cache),
                    )
                    for f in sorted(alt, key=lambda f: (f.match.line, f.match.col))
                )
            )
        out.append(SelectionResult(name, cs.test(event, cache), tuple(alts)))
    return tuple(out)


def explain(compiled: CompiledRule, event: dict[str, Any]) -> Explanation:
    """Evaluate a rule field by field against ``event``."""
    cache: Cache = {}
    sels = _explain_selections(compiled.selections, event, cache)
    truth = {s.name: s.matched for s in sels}
    condition_matched = cond.evaluate(compiled.rule.condition, truth)
    filters = []
    for cf in compiled.filters:
        fs = _explain_selections(cf.selections, event, cache)
        filters.append((cf.filter.title, cf.test(event, cache), fs))
    matched = compiled.test(event, {})
    return Explanation(compiled.rule, matched, condition_matched, sels, tuple(filters))


def _positive_refs(node: cond.Node, positive: bool = True) -> list[str]:
    if isinstance(node, cond.Ref):
        return [node.name] if positive else []
    if isinstance(node, cond.Not):
        return _positive_refs(node.item, not positive)
    out: list[str] = []
    for item in node.items:
        out += _positive_refs(item, positive)
    return out


def evidence(
    compiled: CompiledRule, event: dict[str, Any], cache: Cache | None = None
) -> dict[str, Any]:
    """Field path -> event value for the comparisons that made a matching rule fire.

    Pass the evaluation's ``cache`` so derived fields are not computed again.
    """
    cache = {} if cache is None else cache
    out: dict[str, Any] = {}
    for name in dict.fromkeys(_positive_refs(compiled.rule.condition)):
        cs = compiled.selections[name]
        if not cs.test(event, cache):
            continue
        for alt in cs.alternatives:
            if all(f.test(event, cache) for f in alt):
                for f in sorted(alt, key=lambda f: (f.match.line, f.match.col)):
                    leaves = f.leaves(event, cache)
                    out[f.match.path] = leaves[0] if len(leaves) == 1 else list(leaves) or None
                break
    return out
