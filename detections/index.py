"""What a condition implies about ``verb``, ``objectRef.resource`` and ``objectRef.subresource``.

The engine skips a rule for an event only when the rule's condition *provably* cannot match.
A condition's constraints are kept in disjunctive normal form: a list of alternatives, each
mapping an indexed field to the (lower-cased) values it must take; a field absent from an
alternative is unconstrained. ``[{}]`` means "no usable constraint", ``[]`` "can never match".
``not``, wildcards and modifiers other than ``cased``/``all`` give no constraint, which is
always safe.

>>> from detections.rule import FieldMatch, Selection
>>> from detections.condition import Ref
>>> sel = Selection("s", ((FieldMatch("verb", "verb", "verb", (), ("create", "Patch")),),))
>>> c = constraints(Ref("s"), {"s": sel})
>>> [sorted(alt["verb"]) for alt in c]
[['create', 'patch']]
"""

from __future__ import annotations

from collections.abc import Mapping

from detections.condition import And, AtLeast, Node, Not, Or, Ref
from detections.modifiers.registry import TEXT_WISE
from detections.rule import FieldMatch, Selection

INDEXED = ("verb", "objectRef.resource", "objectRef.subresource")
#: Beyond this many alternatives, constraints are merged (less precise, still sound).
MAX_ALTERNATIVES = 64

Value = str | None
Conjunct = dict[str, frozenset[Value]]
Constraints = list[Conjunct]

UNCONSTRAINED: Constraints = [{}]


def _field_constraint(fm: FieldMatch) -> frozenset[Value] | None:
    if fm.path not in INDEXED or set(fm.modifiers) - {"cased", "all"}:
        return None
    out: set[Value] = set()
    for value in fm.values:
        if value is None:
            out.add(None)
        elif isinstance(value, str) and not set(value) & {"*", "?", "\\"}:
            out.add(value.lower())
        else:
            return None
    if "all" in fm.modifiers and len(out) > 1:
        return frozenset()  # one scalar field cannot equal two different values
    return frozenset(out)


def _merge(alts: Constraints) -> Constraints:
    """One conjunct implied by every alternative (fields common to all, values united)."""
    if not alts:
        return []
    keys = set(alts[0])
    for alt in alts[1:]:
        keys &= set(alt)
    return [{k: frozenset().union(*(a[k] for a in alts)) for k in keys}]


def _and(parts: list[Constraints]) -> Constraints:
    result: Constraints = [{}]
    for part in parts:
        combined: Constraints = []
        for left in result:
            for right in part:
                merged = dict(left)
                ok = True
                for key, allowed in right.items():
                    merged[key] = merged[key] & allowed if key in merged else allowed
                    if not merged[key]:
                        ok = False
                        break
                if ok:
                    combined.append(merged)
        result = combined if len(combined) <= MAX_ALTERNATIVES else _merge(combined)
        if not result:
            return []
    return result


def _or(parts: list[Constraints]) -> Constraints:
    alts = [alt for part in parts for alt in part]
    if any(not alt for alt in alts):
        return [{}]
    return alts if len(alts) <= MAX_ALTERNATIVES else _merge(alts)


def selection_constraints(sel: Selection) -> Constraints:
    """Constraints implied by one selection (OR over its alternatives)."""
    alts: list[Constraints] = []
    for alt in sel.alternatives:
        parts: list[Constraints] = []
        for fm in alt:
            c = _field_constraint(fm)
            if c is not None:
                parts.append([{fm.path: c}] if c else [])
        alts.append(_and(parts))
    return _or(alts)


def constraints(node: Node, selections: Mapping[str, Selection]) -> Constraints:
    """Constraints that hold whenever ``node`` is true."""
    if isinstance(node, Ref):
        return selection_constraints(selections[node.name])
    if isinstance(node, Not):
        return [{}]
    if isinstance(node, And):
        return _and([constraints(i, selections) for i in node.items])
    if isinstance(node, AtLeast) and node.count > len(node.items):
        return []
    return _or([constraints(i, selections) for i in node.items])


def disjoint(a: Constraints, b: Constraints) -> str | None:
    """The indexed field(s) on which ``a`` and ``b`` can never both hold, if they cannot.

    >>> disjoint([{"verb": frozenset({"create"})}], [{"verb": frozenset({"delete"})}])
    'verb'
    >>> disjoint([{"verb": frozenset({"create"})}], [{}]) is None
    True
    """
    if not a or not b or _and([a, b]):
        return None
    fields = sorted(
        {
            key
            for left in a
            for right in b
            for key in INDEXED
            if key in left and key in right and not left[key] & right[key]
        }
    )
    return "/".join(fields) or None


def admits(c: Constraints, key: tuple[Value, Value, Value]) -> bool:
    """Whether an event with (lower-cased) indexed values ``key`` may satisfy ``c``."""
    for alt in c:
        for name, value in zip(INDEXED, key, strict=True):
            allowed = alt.get(name)
            if allowed is not None and value not in allowed:
                break
        else:
            return True
    return False


# --- secondary guards ---------------------------------------------------------------------------
#
# A guard is a list of atoms over arbitrary fields such that, whenever the rule matches, at least
# one atom holds: ("exact", path, values) = some lower-cased text of the field is in ``values``;
# ("test", path, field match) = some text of the field passes the comparison's text test
# (matchers.text_test); ("present", path, None) = the field has at least one non-null value
# (what `|exists: true` asks, and implied by every comparison with a text). Guards let
# the engine skip, with one shared dict lookup per field, rules that are not constrained by the
# primary index (e.g. "anonymous user" or "impersonation" rules that apply to every verb).

Atom = tuple[str, str, frozenset[str] | FieldMatch | None]


#: Fields nearly every event has: a presence atom on them filters nothing.
_ALWAYS_PRESENT = frozenset(
    {
        "verb",
        "stage",
        "level",
        "auditID",
        "requestURI",
        "user.username",
        "user.groups",
        "userAgent",
        "sourceIPs",
        "sourceIP",
        "decision",
        "authzReason",
        "responseStatus.code",
        "response.success",
        "objectRef.resource",
        "objectRef.apiGroup",
        "objectRef.apiVersion",
        "objectRef.namespace",
        "objectRef.name",
        "cluster",
        "kind",
        "apiVersion",
        "requestReceivedTimestamp",
        "stageTimestamp",
    }
)

#: Values most events carry in a field: an exact atom on them filters little.
_COMMON_VALUES: dict[str, frozenset[str]] = {
    "decision": frozenset({"allow"}),
    "annotations.authorization.k8s.io/decision": frozenset({"allow"}),
    "response.success": frozenset({"true", "false"}),
    "responseStatus.code": frozenset({"200", "201"}),
    "stage": frozenset({"responsecomplete"}),
    "level": frozenset({"metadata", "request", "requestresponse"}),
}

#: Guards scoring this or worse let nearly every event through: cheaper not to look them up.
WEAK_GUARD = 300


def _text_form(value: object) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value).lower()
    return None


def _atom(fm: FieldMatch) -> Atom | None:
    """The best guard atom one positive field comparison implies, if any."""
    mods = set(fm.modifiers)
    if fm.path in INDEXED:
        return None  # the primary index already uses these
    if "exists" in mods:
        if len(fm.values) == 1 and fm.values[0] is True and fm.path not in _ALWAYS_PRESENT:
            return ("present", fm.path, None)
        return None  # exists: false holds when the field is absent
    if None in fm.values or "fieldref" in mods:
        return None  # null matches absence; fieldref compares two fields
    if not mods - {"cased"}:
        texts = {_text_form(v) for v in fm.values}
        if None not in texts and not any(set(t) & {"*", "?", "\\"} for t in texts if t is not None):
            return ("exact", fm.path, frozenset(t for t in texts if t is not None))
    # Modifiers that test each text of the field on its own: a ("test", path, field match)
    # atom, which the engine turns into one memoized lookup per distinct value.
    if fm.values and not mods - TEXT_WISE:
        return ("test", fm.path, fm)
    # `|outside` holds only if some text fails that test: ("outside", path, field match).
    if fm.values and "outside" in mods and not mods - TEXT_WISE - {"outside"}:
        return ("outside", fm.path, fm)
    if fm.path in _ALWAYS_PRESENT:
        return None
    return ("present", fm.path, None)  # a text value is a non-null value


def score(atoms: list[Atom]) -> int:
    """Lower is better: how likely the guard is to let an ordinary event through."""
    worst = 0
    for kind, path, values in atoms:
        common = isinstance(values, frozenset) and bool(values & _COMMON_VALUES.get(path, set()))
        # "outside" first with "exact": most traffic comes from inside the cluster's networks
        rank = 0 if kind in ("exact", "outside") else 1 if kind == "test" else 2
        worst = max(worst, 3 if common else rank)
    return worst * 100 + len(atoms)


def guard(node: Node, selections: Mapping[str, Selection]) -> list[Atom] | None:
    """Atoms of which at least one holds whenever ``node`` does; None if no guard is known.

    >>> from detections.rule import FieldMatch, Selection
    >>> sel = Selection("s", ((FieldMatch("u", "user.username", "user.username", (),
    ...                                    ("system:anonymous",)),),))
    >>> guard(Ref("s"), {"s": sel})
    [('exact', 'user.username', frozenset({'system:anonymous'}))]
    """
    if isinstance(node, Ref):
        out: list[Atom] = []
        for alt in selections[node.name].alternatives:
            atoms = [a for a in (_atom(fm) for fm in alt) if a is not None]
            if not atoms:
                return None
            out.append(min(atoms, key=lambda a: score([a])))
        return out
    if isinstance(node, Not):
        return None
    if isinstance(node, And):
        options = [g for g in (guard(i, selections) for i in node.items) if g is not None]
        return min(options, key=score) if options else None
    if isinstance(node, AtLeast) and node.count > len(node.items):
        return []
    parts = [guard(i, selections) for i in node.items]
    if any(p is None for p in parts):
        return None
    return [a for p in parts if p is not None for a in p]


# --- blockers -----------------------------------------------------------------------------------
#
# The other way round: field comparisons any one of which, when it holds, makes the rule false
# (`selection and not filter_system` with `filter_system: {user.username|expand: ...}`). Most
# audit traffic comes from control-plane identities that such filters exempt, so one lookup of
# the user name rules out every rule that trusts it.


def without_false(node: Node, false: frozenset[str]) -> Node:
    """``node`` with the selections that can never match (``false``: an ``|expand`` of empty
    lists, such as ``from_outside`` while ``cluster_networks`` is empty) folded away where
    that is a plain simplification: ``X and not F`` is ``X``. So
    ``not (trusted_system and not from_outside)`` stays a blocker of ``trusted_system``
    until the list is filled in.

    >>> without_false(Not(And((Ref("t"), Not(Ref("f"))))), frozenset({"f"}))
    Not(item=Ref(name='t'))
    """
    if not false:
        return node
    if isinstance(node, Not):
        return Not(without_false(node.item, false))
    if isinstance(node, And):
        items = tuple(
            without_false(i, false)
            for i in node.items
            if not (isinstance(i, Not) and isinstance(i.item, Ref) and i.item.name in false)
        )
        if len(items) == 1:
            return items[0]
        return And(items) if items else node
    if isinstance(node, Or):
        return Or(tuple(without_false(i, false) for i in node.items))
    return node


def blockers(node: Node, selections: Mapping[str, Selection]) -> list[FieldMatch]:
    """Comparisons any one of which, when it holds for an event, makes ``node`` false.

    >>> from detections.rule import FieldMatch, Selection
    >>> sel = Selection("s", ((FieldMatch("verb", "verb", "verb", (), ("get",)),),))
    >>> flt = Selection("f", ((FieldMatch("u", "user.username", "user.username", (),
    ...                                   ("kubelet",)),),))
    >>> [fm.path for fm in blockers(And((Ref("s"), Not(Ref("f")))), {"s": sel, "f": flt})]
    ['user.username']
    """
    if isinstance(node, And):
        return [fm for item in node.items for fm in blockers(item, selections)]
    if isinstance(node, Not):
        return _holders(node.item, selections)
    return []


def _holders(node: Node, selections: Mapping[str, Selection]) -> list[FieldMatch]:
    """Comparisons any one of which, when it holds for an event, makes ``node`` true."""
    if isinstance(node, Ref):
        return [alt[0] for alt in selections[node.name].alternatives if len(alt) == 1]
    if isinstance(node, Or):
        return [fm for item in node.items for fm in _holders(item, selections)]
    if isinstance(node, Not):
        return blockers(node.item, selections)
    return []  # And / AtLeast: one comparison alone does not make them true


def trust_blockers(node: Node, selections: Mapping[str, Selection]) -> list[tuple[FieldMatch, str]]:
    """Comparisons that make ``node`` false unless a selection holds, as (comparison, that
    selection's name): conditional trust, ``not (trusted_system and not from_outside)``,
    where ``trusted_system`` holds by user name and ``from_outside`` by source address.

    >>> from detections.rule import FieldMatch, Selection
    >>> who = Selection("t", ((FieldMatch("u", "user.username", "user.username", (),
    ...                                   ("kubelet",)),),))
    >>> where = Selection("o", ((FieldMatch("s", "sourceIPs", "sourceIPs", ("cidr", "outside"),
    ...                                     ("10.0.0.0/8",)),),))
    >>> node = Not(And((Ref("t"), Not(Ref("o")))))
    >>> [(fm.path, name) for fm, name in trust_blockers(node, {"t": who, "o": where})]
    [('user.username', 'o')]
    """
    if isinstance(node, And):
        return [pair for item in node.items for pair in trust_blockers(item, selections)]
    if not isinstance(node, Not) or not isinstance(node.item, And) or len(node.item.items) != 2:
        return []
    a, b = node.item.items
    for trusted, unless in ((a, b), (b, a)):
        if isinstance(unless, Not) and isinstance(unless.item, Ref):
            return [(fm, unless.item.name) for fm in _holders(trusted, selections)]
    return []
