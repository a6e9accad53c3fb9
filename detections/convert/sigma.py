"""A loaded Klaxon rule (with the filters that name it) as a plain Sigma document.

What the engine compiles is what gets converted: named lists are expanded (``|expand`` is
replaced by the list's values), aliases are resolved to canonical paths, meta-filters are
ANDed onto the rule's condition, and selections that can never match (an ``|expand`` of an
empty list, as the engine compiles them) are folded out of the condition. The document is
Sigma v2 with canonical Klaxon field names; the processing pipeline maps those to raw paths.

>>> from detections import load_rules
>>> rs = load_rules([], texts={"r.yml": '''
... title: Exec by a stranger
... id: 0b0c8f9e-2a8e-4a53-9d0b-6f1d2f3f4a5b
... logsource: {product: kubernetes, service: audit}
... detection:
...   sel: {verb: create, objectRef.subresource: exec}
...   trusted: {user.username|expand: '%system_principals%'}
...   condition: sel and not trusted
... '''})
>>> doc = to_sigma(rs.rules[0], (), {"system_principals": ()})  # as if the list were empty
>>> doc["detection"]
{'sel': {'verb': 'create', 'objectRef.subresource': 'exec'}, 'condition': 'sel'}
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from detections import condition as cond
from detections.convert.fields import OUTSIDE_MARK, is_multivalued, raw_paths
from detections.matchers import MatchSpecError
from detections.modifiers.expand import Expand
from detections.rule import FieldMatch, Filter, Rule, Selection

#: Modifiers of the Sigma specification (pySigma knows them); any other is Klaxon's own.
SIGMA_MODIFIERS = frozenset(
    {
        "contains", "startswith", "endswith", "all", "base64", "base64offset", "wide",
        "utf16le", "utf16be", "utf16", "windash", "re", "i", "ignorecase", "m", "multiline",
        "s", "dotall", "cidr", "exists", "expand", "fieldref", "gt", "gte", "lt", "lte",
        "cased", "neq", "minute", "hour", "day", "week", "month", "year",
    }
)  # fmt: skip

#: What a Klaxon-only modifier means, for the reason a rule using it cannot be converted.
KLAXON_MODIFIERS: dict[str, str] = {}


class NotConvertible(Exception):
    """A rule cannot be written for a target; ``reason`` says why, for the rule's author."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# A folded condition: a node, or a constant when every selection in it is decided.
Folded = cond.Node | bool


def to_sigma(
    rule: Rule, filters: Sequence[Filter], lists: Mapping[str, Sequence[Any]]
) -> dict[str, Any]:
    """The Sigma document of ``rule`` with ``filters`` applied; raises :class:`NotConvertible`."""
    detection: dict[str, Any] = {}
    parts: list[Folded] = []
    sources: list[tuple[str, dict[str, Selection], cond.Node]] = [
        ("", rule.detection, rule.condition)
    ]
    sources += [(f"filter{i}_", f.detection, f.condition) for i, f in enumerate(filters, 1)]
    for prefix, selections, node in sources:
        resolved = {
            name: _selection(prefix + name, selection, lists, detection)
            for name, selection in selections.items()
        }
        parts.append(_fold(node, resolved))
    folded = _all(parts)
    if folded is False:
        empty = sorted(_empty_lists(rule, filters, lists))
        raise NotConvertible(
            "never matches as configured: named list(s) "
            + ", ".join(f"'{n}'" for n in empty)
            + " are empty"
        )
    if folded is True:
        raise NotConvertible("matches every event as configured (its selections fold away)")
    used = cond.refs(folded)
    detection = {k: v for k, v in detection.items() if k in used}
    detection["condition"] = render(folded)
    doc: dict[str, Any] = {
        "title": rule.title,
        "id": rule.id,
        "status": rule.status or "experimental",
        "logsource": rule.logsource or {"product": "kubernetes", "service": "audit"},
        "detection": detection,
        "level": rule.level or "medium",
    }
    if rule.description:
        doc["description"] = rule.description
    tags = [t for t in rule.tags if "." in t]  # Sigma's namespace.name; others do not query
    if tags:
        doc["tags"] = tags
    if rule.falsepositives:
        doc["falsepositives"] = list(rule.falsepositives)
    if rule.author:
        doc["author"] = rule.author
    if rule.date:
        doc["date"] = rule.date
    return doc


def _selection(
    name: str, selection: Selection, lists: Mapping[str, Sequence[Any]], detection: dict[str, Any]
) -> Folded:
    """Add the Sigma bodies of a selection to ``detection``; return what stands for it in the
    condition (False when no alternative can match).

    An alternative with ``|outside`` items becomes its own selections: over a single-valued
    field, ``field|exists`` and ``not field|...`` (the one value matches none); over a list,
    a marked field (:data:`OUTSIDE_MARK`) only targets that search element-wise accept."""
    plain: list[dict[str, Any]] = []
    exprs: list[Folded] = []
    for k, alternative in enumerate(selection.alternatives):
        body: dict[str, Any] = {}
        others: list[tuple[str, bool, dict[str, Any]]] = []  # (suffix, negated, body)
        for fm in alternative:
            item = _item(fm, lists)
            if item is None:
                break  # an empty list: this alternative never matches
            key, value, outside = item
            if outside == "list":
                others.append((f"_outside{len(others)}", False, {key: value}))
                continue
            if outside == "scalar":
                others.append((f"_in{len(others)}", True, {key: value}))
                key, value = f"{fm.path}|exists", True
            if key in body:
                raise NotConvertible(f"selection '{selection.name}' tests {key!r} twice")
            body[key] = value
        else:
            if not others:
                plain.append(body)
                continue
            sub = f"{name}_{k}"
            terms: list[Folded] = []
            for sel_name, sel_body, negated in [(sub, body, False)] + [
                (sub + suffix, b, neg) for suffix, neg, b in others
            ]:
                if not sel_body:
                    continue
                if sel_name in detection:
                    raise NotConvertible(f"selection name '{sel_name}' is taken")
                detection[sel_name] = sel_body
                terms.append(cond.Not(cond.Ref(sel_name)) if negated else cond.Ref(sel_name))
            exprs.append(_all(terms))
    if plain:
        detection[name] = plain[0] if len(plain) == 1 else plain
        exprs.insert(0, cond.Ref(name))
    return _any(exprs)


def _item(fm: FieldMatch, lists: Mapping[str, Sequence[Any]]) -> tuple[str, Any, str | None] | None:
    """``field|modifiers``, its value(s) with named lists expanded, and whether it is an
    ``|outside`` (``"scalar"`` or ``"list"``); None when it expands to nothing."""
    modifiers = [m for m in fm.modifiers if m not in ("expand", "outside")]
    own = [m for m in modifiers if m not in SIGMA_MODIFIERS]
    values: tuple[Any, ...] = fm.values
    if "expand" in fm.modifiers:
        try:
            expanded = Expand("expand").apply(fm.values, lists)
        except MatchSpecError as exc:  # the loader accepted it with the same lists
            raise NotConvertible(f"{fm.key}: {exc.message}") from None
        values = tuple(v for _, items in expanded for v in items)
        if not values:
            return None  # never matches, as the engine compiles it: folded away
    if own:
        meaning = KLAXON_MODIFIERS.get(own[0], "a comparison only Klaxon's engine has")
        raise NotConvertible(f"Klaxon-only modifier: '{fm.key}': '{own[0]}' means {meaning}")
    value = values[0] if len(values) == 1 else list(values)
    if "outside" not in fm.modifiers:
        return "|".join([fm.path, *modifiers]), value, None
    if any(is_multivalued(p) for p in raw_paths(fm.path)):
        return "|".join([fm.path + OUTSIDE_MARK, *modifiers]), value, "list"
    return "|".join([fm.path, *modifiers]), value, "scalar"


def _empty_lists(
    rule: Rule, filters: Sequence[Filter], lists: Mapping[str, Sequence[Any]]
) -> set[str]:
    names: set[str] = set()
    for detection in (rule.detection, *(f.detection for f in filters)):
        for selection in detection.values():
            for alternative in selection.alternatives:
                for fm in alternative:
                    if "expand" not in fm.modifiers:
                        continue
                    for value in fm.values:
                        for name in str(value).split("%")[1::2]:
                            if not lists.get(name):
                                names.add(name)
    return names


# --- conditions -------------------------------------------------------------------------------


def _fold(node: cond.Node, resolved: Mapping[str, Folded]) -> Folded:
    """``node`` with each selection replaced by what stands for it, constants folded away."""
    if isinstance(node, cond.Ref):
        return resolved[node.name]
    if isinstance(node, cond.Not):
        inner = _fold(node.item, resolved)
        return (not inner) if isinstance(inner, bool) else cond.Not(inner)
    if isinstance(node, cond.And):
        return _all([_fold(i, resolved) for i in node.items])
    if isinstance(node, cond.Or):
        return _any([_fold(i, resolved) for i in node.items])
    # At least `count` of the items: an OR over the ANDs of every combination of that size.
    items = [_fold(i, resolved) for i in node.items]
    return _any([_all(list(c)) for c in itertools.combinations(items, node.count)])


def _all(items: Sequence[Folded]) -> Folded:
    if any(i is False for i in items):
        return False
    rest = [i for i in items if not isinstance(i, bool)]
    if not rest:
        return True
    return rest[0] if len(rest) == 1 else cond.And(tuple(rest))


def _any(items: Sequence[Folded]) -> Folded:
    if any(i is True for i in items):
        return True
    rest = [i for i in items if not isinstance(i, bool)]
    if not rest:
        return False
    return rest[0] if len(rest) == 1 else cond.Or(tuple(rest))


def render(node: cond.Node) -> str:
    """A Sigma condition string for a condition tree (``AtLeast`` already folded).

    >>> render(cond.And((cond.Ref("a"), cond.Not(cond.Or((cond.Ref("b"), cond.Ref("c")))))))
    'a and not (b or c)'
    """
    if isinstance(node, cond.Ref):
        return node.name
    if isinstance(node, cond.Not):
        inner = render(node.item)
        return f"not {inner}" if isinstance(node.item, (cond.Ref, cond.Not)) else f"not ({inner})"
    if isinstance(node, (cond.And, cond.Or)):
        word = " and " if isinstance(node, cond.And) else " or "
        return word.join(
            render(i) if isinstance(i, (cond.Ref, cond.Not)) else f"({render(i)})"
            for i in node.items
        )
    items = [cond.And(c) for c in itertools.combinations(node.items, node.count)]
    return render(cond.Or(tuple(items)))
