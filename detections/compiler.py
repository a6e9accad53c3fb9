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
from detections.fields import Getter, compile_path
from detections.index import INDEXED, Atom, Constraints, constraints, guard
from detections.matchers import Predicate, compile_match
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
    return lambda e, c: all(p(e, c) for p in items)


def _any(preds: Sequence[Predicate]) -> Predicate:
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda e, c: a(e, c) or b(e, c)
    items = tuple(preds)
    return lambda e, c: any(p(e, c) for p in items)


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
        test = _any([_all([f.test for f in alt]) for alt in alts])
        out[name] = CompiledSelection(sel, tuple(alts), test)
    return out


def compile_condition(node: cond.Node, selections: Mapping[str, CompiledSelection]) -> Predicate:
    """Turn a condition tree into one predicate over the compiled selections."""
    if isinstance(node, cond.Ref):
        return selections[node.name].test
    if isinstance(node, cond.Not):
        inner = compile_condition(node.item, selections)
        return lambda e, c: not inner(e, c)
    parts = [compile_condition(i, selections) for i in node.items]
    if isinstance(node, cond.And):
        # Positive terms first: `selection and not filter` stops early on most events.
        parts = [
            p for i, p in zip(node.items, parts, strict=True) if not isinstance(i, cond.Not)
        ] + [p for i, p in zip(node.items, parts, strict=True) if isinstance(i, cond.Not)]
        return _all(parts)
    if isinstance(node, cond.Or):
        return _any(parts)
    count = node.count
    items = tuple(parts)
    return lambda e, c: sum(1 for p in items if p(e, c)) >= count


def compile_rule(
    rule: Rule, filters: Sequence[Filter], lists: Mapping[str, Sequence[Any]]
) -> CompiledRule:
    """Compile a rule and the filters that apply to it."""
    selections = compile_selections(rule.detection, lists)
    test = compile_condition(rule.condition, selections)
    cfilters = []
    for flt in filters:
        fsel = compile_selections(flt.detection, lists)
        cfilters.append(CompiledFilter(flt, fsel, compile_condition(flt.condition, fsel)))
    if cfilters:
        test = _all([test, *(f.test for f in cfilters)])
    return CompiledRule(
        rule,
        selections,
        tuple(cfilters),
        test,
        constraints(rule.condition, rule.detection),
        guard(rule.condition, rule.detection),
    )


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
    selections: Mapping[str, CompiledSelection], event: dict[str, Any], cache: dict[str, Any]
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
    cache: dict[str, Any] = {}
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
    compiled: CompiledRule, event: dict[str, Any], cache: dict[str, Any] | None = None
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
