"""Lints of conditions: unused selections, redundant quantifiers, filters that do nothing."""

from __future__ import annotations

from collections.abc import Iterator

from detections import condition as cond
from detections.index import constraints, disjoint
from detections.lints.base import Context, Finding, Subject


def unused_selection(subject: Subject, context: Context) -> Iterator[Finding]:
    """A selection the condition never names."""
    if subject.condition is None:
        return
    used = cond.refs(subject.condition)
    for name in subject.selections:
        if name not in used:
            yield (*subject.base, name), f"selection '{name}' is not used by the condition", None


def redundant_quantifier(subject: Subject, context: Context) -> Iterator[Finding]:
    """``sel_a and 1 of sel_*``: the quantifier is satisfied by ``sel_a`` itself."""
    node = subject.condition
    if subject.kind != "rule" or not isinstance(node, cond.And):
        return
    required = {i.name for i in node.items if isinstance(i, cond.Ref)}
    for item in node.items:
        if isinstance(item, (cond.Or, cond.AtLeast)) and all(
            isinstance(r, cond.Ref) for r in item.items
        ):
            names = [r.name for r in item.items if isinstance(r, cond.Ref)]
            overlap = [n for n in names if n in required]
            if overlap and len(names) > 1:
                yield (
                    ("detection", "condition"),
                    f"'{overlap[0]}' is required on its own and also counts towards a "
                    f"quantifier over {', '.join(names)}, which it therefore always satisfies",
                    None,
                )


def dead_filter(subject: Subject, context: Context) -> Iterator[Finding]:
    """An exclusion that can never hold when the rest holds (``a and not f`` with ``f``
    needing another verb), or a meta-filter that can never apply to (or always blocks) the
    rule it names."""
    if subject.kind == "rule":
        yield from _never_matching_filters(subject)
    elif subject.kind == "filter":
        yield from _dead_meta_filter(subject, context)


def _never_matching_filters(subject: Subject) -> Iterator[Finding]:
    node = subject.condition
    if not isinstance(node, cond.And):
        return
    selections = subject.selections
    positives = [i for i in node.items if not isinstance(i, cond.Not)]
    required = constraints(cond.And(tuple(positives)), selections) if positives else [{}]
    for item in node.items:
        if isinstance(item, cond.Not):
            for name in sorted(cond.refs(item.item)):
                field = disjoint(required, constraints(cond.Ref(name), selections))
                if field is not None:
                    yield (
                        (*subject.base, name),
                        f"'{name}' can never match when the rest of the condition does "
                        f"(they require different {field} values), so excluding it does nothing",
                        None,
                    )


def _dead_meta_filter(subject: Subject, context: Context) -> Iterator[Finding]:
    if subject.condition is None:
        return
    positive = constraints(subject.condition, subject.selections)
    negated = None
    if isinstance(subject.condition, cond.Not):
        negated = constraints(subject.condition.item, subject.selections)
    for rule in context.rules:
        if {rule.id, rule.name} & set(subject.targets):
            req = constraints(rule.condition, rule.detection)
            if negated is not None:
                field = disjoint(req, negated)
                message = f"filter can never apply to '{rule.title}'"
            else:
                field = disjoint(req, positive)
                message = f"filter makes '{rule.title}' unable to ever fire"
            if field is not None:
                yield ("filter",), f"{message} (they require different {field} values)", None
