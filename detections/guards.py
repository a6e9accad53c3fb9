"""Guard lookups: which guarded rules an event's field values let through, in a few dict hits.

A rule's guard (:func:`detections.index.guard`) is a list of atoms over non-indexed fields, at
least one of which holds whenever the rule matches. For every guarded field the engine keeps
one *classifier*: a memoized function from one text of the field to the numbers of the rules
whose atom on that field the text satisfies. Field values repeat endlessly in audit logs (user
names, user agents, response codes, images), so after warm-up each field costs one walk and
one dict lookup per event, however many rules guard on it.

A lookup returns a frozenset of rule numbers, or None when the field has no value at all
(absent or null): then neither its value atoms nor its presence atoms hold.

>>> from detections.matchers import text_test
>>> classify = classifier([(0, exact_test(frozenset({"system:anonymous"}))),
...                        (1, text_test(("startswith",), ["system:serviceaccount:"], {}))])
>>> look = field_lookup("user.username", classify)
>>> look({"user": {"username": "System:Anonymous"}}, {}), look({"verb": "get"}, {})
(frozenset({0}), None)
>>> sorted(look({"user": {"username": ["system:serviceaccount:a:b", "system:anonymous"]}}, {}))
[0, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from detections.fields import (
    ABSENT,
    Cache,
    compile_path,
    derived_root,
    fast_parent,
    fast_path,
    flatten_into,
)
from detections.matchers import MEMO_ENTRIES, MEMO_MAX_TEXT, memoize, texts_of

#: text -> numbers of the rules whose atom on one field the text satisfies.
Classifier = Callable[[str], frozenset[int]]
#: (event, per-event cache) -> rule numbers let through, or None when the field has no value.
Lookup = Callable[[dict[str, Any], Cache], frozenset[int] | None]

NOTHING: frozenset[int] = frozenset()
_MISSING = object()


#: Every lookup of a plan, as one tuple of results (the key of the plan's remembered selections).
Lookups = Callable[[dict[str, Any], Cache], tuple[frozenset[int] | None, ...]]


def all_lookups(lookups: Sequence[Lookup]) -> Lookups:
    """One call for every lookup's result, unrolled for up to six lookups (no list, no loop).

    >>> look = field_lookup("verb", classifier([(0, exact_test(frozenset({"get"})))]))
    >>> all_lookups([look, look])({"verb": "get"}, {})
    (frozenset({0}), frozenset({0}))
    """
    items = tuple(lookups)
    n = len(items)
    if n == 1:
        (a,) = items
        return lambda e, c: (a(e, c),)
    if n == 2:
        a, b = items
        return lambda e, c: (a(e, c), b(e, c))
    if n == 3:
        a, b, d = items
        return lambda e, c: (a(e, c), b(e, c), d(e, c))
    if n == 4:
        a, b, d, f = items
        return lambda e, c: (a(e, c), b(e, c), d(e, c), f(e, c))
    if n == 5:
        a, b, d, f, g = items
        return lambda e, c: (a(e, c), b(e, c), d(e, c), f(e, c), g(e, c))
    if n == 6:
        a, b, d, f, g, h = items
        return lambda e, c: (a(e, c), b(e, c), d(e, c), f(e, c), g(e, c), h(e, c))
    return lambda e, c: tuple([look(e, c) for look in items])


def classifier(atoms: Sequence[tuple[int, Callable[[str], bool]]]) -> Classifier:
    """One field's classifier over ``(rule number, text test)`` atoms (memoized)."""
    items = tuple(atoms)
    if len(items) == 1:  # the test itself is memoized or cheap: no second memo
        ((number, test),) = items
        only = frozenset({number})
        return lambda text: only if test(text) else NOTHING
    # Equal results are one object, so whoever keys a dict by them compares by identity.
    canonical: dict[frozenset[int], frozenset[int]] = {}

    def classify(text: str) -> frozenset[int]:
        found = frozenset(n for n, test in items if test(text))
        if len(canonical) >= MEMO_ENTRIES:
            canonical.clear()
        return canonical.setdefault(found, found)

    return memoize(classify)


def exact_test(values: frozenset[str]) -> Callable[[str], bool]:
    """The text test of an ``exact`` atom: the lower-cased text is one of ``values``."""
    return lambda t: t.lower() in values


def _general(path: str, classify: Classifier, present: frozenset[int]) -> Lookup:
    """Any field through the general walker (lists, dotted keys, derived fields)."""
    getter = compile_path(path)

    def general(event: dict[str, Any], cache: Cache) -> frozenset[int] | None:
        return _leaves_hits(getter(event, cache), classify, present)

    return general


def _leaves_hits(
    leaves: Sequence[Any], classify: Classifier, present: frozenset[int]
) -> frozenset[int] | None:
    """The rules a field's leaves let through: their texts' rules and ``present``, or None
    when no leaf has a value."""
    if not any(leaf is not None for leaf in leaves):
        return None
    found = present
    for t in texts_of(leaves):
        hit = classify(t)
        if hit:  # no new set for the texts that let nothing through (most of them)
            found = hit if not found else found | hit
    return found


def field_lookup(path: str, classify: Classifier, present: frozenset[int] = NOTHING) -> Lookup:
    """The lookup of one field; ``present`` rules are let through by any non-null value.

    A string, an integer or a flat list of strings reached by the fast path
    (:func:`detections.fields.fast_path`) is classified inline; anything else takes the
    general walker, so the result is the same.
    """
    general = _general(path, classify, present)
    split = derived_root(path)
    if split is not None and not split[1]:
        return _derived_lookup(compile_path(path), classify, present)
    probe = fast_path(path)
    if probe is None:
        return general
    # text or number -> its rules with `present`: one dict hit per value after warm-up.
    by_number: dict[int, frozenset[int]] = {}
    by_text: dict[str, frozenset[int]] = {}
    of_text = _memo_miss(classify, present, by_text)

    def other(v: Any, event: dict[str, Any], cache: Cache) -> frozenset[int] | None:
        """Any value but a text (which the lookups classify inline)."""
        if v.__class__ is int:  # a status code: remembered by number, no str() per event
            found = by_number.get(v)
            if found is None:
                found = classify(str(v)) | present if present else classify(str(v))
                if len(by_number) < MEMO_ENTRIES:
                    by_number[v] = found
            return found
        if v is ABSENT:
            return None
        # null, a flat list of strings (user.groups), or anything else for the walker
        return _value_hits(v, by_text, of_text, general, event, cache)

    # Top-level and two-key fields are read inline (the probe is asked when a dict is not
    # there), and their most common values handled without a further call.
    top, _, below = path.partition(".")
    if not below:

        def top_lookup(event: dict[str, Any], cache: Cache) -> frozenset[int] | None:
            v = event.get(top, ABSENT)
            cls = v.__class__
            if cls is str:
                found = by_text.get(v)
                return of_text(v) if found is None else found
            if cls is list and len(v) == 1 and v[0].__class__ is str:  # one source address
                found = by_text.get(v[0])
                if found is None:
                    found = of_text(v[0])
                return found or NOTHING  # as _value_hits: an empty result is NOTHING
            return other(v, event, cache)

        return top_lookup
    if "." not in below:

        def two_key_lookup(event: dict[str, Any], cache: Cache) -> frozenset[int] | None:
            v = event.get(top)
            v = v.get(below, ABSENT) if v.__class__ is dict else probe(event)
            if v.__class__ is str:
                found = by_text.get(v)
                return of_text(v) if found is None else found
            if v.__class__ is int:
                found = by_number.get(v)
                if found is not None:
                    return found
            return other(v, event, cache)

        return two_key_lookup

    def lookup(event: dict[str, Any], cache: Cache) -> frozenset[int] | None:
        v = probe(event)
        if v.__class__ is str:
            found = by_text.get(v)
            return of_text(v) if found is None else found
        return other(v, event, cache)

    return lookup


#: Up to this many sibling fields, a lookup asks for each (a few misses cost less than
#: visiting the parent's keys).
_FEW_SIBLINGS = 4


def sibling_lookup(fields: Sequence[tuple[str, Classifier, frozenset[int]]]) -> Lookup:
    """One lookup for several plain fields under the same parent (``user.username`` and
    ``user.groups``; ``requestObject.data.password``, ``requestObject.data.token``): the union
    of their :func:`field_lookup` results, one walk to the parent.

    >>> look = sibling_lookup([
    ...     ("user.username", classifier([(0, exact_test(frozenset({"admin"})))]), NOTHING),
    ...     ("user.groups", classifier([(1, exact_test(frozenset({"system:masters"})))]),
    ...      NOTHING)])
    >>> sorted(look({"user": {"username": "admin", "groups": ["system:masters"]}}, {}))
    [0, 1]
    >>> look({"verb": "get"}, {}) is None
    True
    """
    parents = {path.rpartition(".")[0] for path, _, _ in fields}
    shapes = {len(p.split(".")) in (2, 3) and derived_root(p) is None for p, _, _ in fields}
    if len(parents) != 1 or shapes != {True}:
        raise ValueError("sibling_lookup needs plain two-key or three-key fields under one parent")
    parent = fast_parent([path for path, _, _ in fields])
    top = next(iter(parents))
    top = top if "." not in top else ""  # a top-level parent is read inline
    # (key below the parent, its text -> rules with `present`, the miss handler, its lists of
    # texts -> rules, general lookup)
    subs = tuple(_sibling(path, classify, present) for path, classify, present in fields)
    by_key = {sub[0]: sub for sub in subs}
    union = _union_memo()
    everything = [sub[4] for sub in subs]

    def slow(event: dict[str, Any], cache: Cache) -> frozenset[int] | None:
        hits: frozenset[int] | None = None
        for general in everything:
            found = general(event, cache)
            if found is not None:
                hits = found if hits is None else hits | found
        return hits

    dotted = tuple(path for path, _, _ in fields)  # what could stand for a top-level parent
    many = len(subs) > _FEW_SIBLINGS

    def lookup(event: dict[str, Any], cache: Cache) -> frozenset[int] | None:
        v = event.get(top) if top else parent(event)
        if v.__class__ is not dict:
            if v is None and top:  # absent or null (impersonatedUser, mostly)
                for path in dotted:
                    if path in event:
                        break
                else:
                    return None
            v = parent(event)  # absent, or not a dict: the probe says which
            if v.__class__ is not dict:
                return None if v is ABSENT else slow(event, cache)
        # Many fields under a small object (credential keys of a ConfigMap's data): visit
        # the object's keys instead of asking for each field.
        looked = subs if not many or len(subs) <= len(v) else [by_key[k] for k in v if k in by_key]
        hits: frozenset[int] | None = None
        for key, by_text, of_text, by_list, general in looked:
            x = v.get(key)
            if x.__class__ is str:  # inline: most values are one string
                found = by_text.get(x)
                if found is None:
                    found = of_text(x)
            elif x.__class__ is list:  # user.groups: the same few lists over and over
                try:
                    found = by_list.get(tuple(x))
                except TypeError:  # unhashable items: the walker decides
                    found = None
                if found is None:
                    found = _list_miss(x, by_text, of_text, by_list, general, event, cache)
                    if found is None:
                        continue
            else:
                found = _value_hits(x, by_text, of_text, general, event, cache)
                if found is None:
                    continue
            if hits is None or not hits:
                hits = found
            elif found:
                hits = union(hits, found)
        return hits

    return lookup


def _union_memo() -> Callable[[frozenset[int], frozenset[int]], frozenset[int]]:
    """``a | b``, remembered: siblings' results are few shared sets (a user name's and its
    groups'), and the union of two large ones costs more than a dict hit."""
    memo: dict[tuple[frozenset[int], frozenset[int]], frozenset[int]] = {}

    def union(a: frozenset[int], b: frozenset[int]) -> frozenset[int]:
        key = (a, b)
        found = memo.get(key)
        if found is None:
            if len(memo) >= MEMO_ENTRIES:
                memo.clear()
            found = memo[key] = a | b
        return found

    return union


def _value_hits(
    x: Any,
    by_text: dict[str, frozenset[int]],
    of_text: Callable[[str], frozenset[int]],
    general: Lookup,
    event: dict[str, Any],
    cache: Cache,
) -> frozenset[int] | None:
    """A field's rules from its value ``x`` (a sibling's, or one field's past its inline
    cases): text and flat lists of text by their memo, anything else by the general
    walker; None when it has no value."""
    if x is None:
        return None  # absent or null: no dotted alternatives below the parent
    cls = x.__class__
    if cls is str:
        found = by_text.get(x)
        return of_text(x) if found is None else found
    if cls is list:
        if not x:
            return None  # no values
        found = NOTHING
        for item in x:
            if item.__class__ is not str:
                return general(event, cache)  # mixed values: the walker decides
            hit = by_text.get(item)
            if hit is None:
                hit = of_text(item)
            if hit:
                found = hit if not found else found | hit
        return found
    return general(event, cache)


#: Lists of texts longer than this are not remembered whole (their texts still are).
MEMO_MAX_ITEMS = 8


def _list_miss(
    x: list[Any],
    by_text: dict[str, frozenset[int]],
    of_text: Callable[[str], frozenset[int]],
    by_list: dict[tuple[str, ...], frozenset[int]],
    general: Lookup,
    event: dict[str, Any],
    cache: Cache,
) -> frozenset[int] | None:
    """A list's rules when ``by_list`` lacks it (:func:`_value_hits`), remembered when it is a
    short list of short texts: then the result is a function of those texts alone."""
    found = _value_hits(x, by_text, of_text, general, event, cache)
    if (
        found is not None
        and len(by_list) < MEMO_ENTRIES
        and len(x) <= MEMO_MAX_ITEMS
        and all(t.__class__ is str and len(t) <= MEMO_MAX_TEXT for t in x)
    ):
        by_list[tuple(x)] = found
    return found


def _memo_miss(
    classify: Classifier, present: frozenset[int], by_text: dict[str, frozenset[int]]
) -> Callable[[str], frozenset[int]]:
    """What a lookup does when ``by_text`` lacks a text: classify it, add ``present``, and
    remember the result (bounded like every memo here)."""

    def of_text(x: str) -> frozenset[int]:
        found = classify(x) | present if present else classify(x)
        if len(by_text) < MEMO_ENTRIES and len(x) <= MEMO_MAX_TEXT:
            by_text[x] = found
        return found

    return of_text


def _sibling(
    path: str, classify: Classifier, present: frozenset[int]
) -> tuple[
    str,
    dict[str, frozenset[int]],
    Callable[[str], frozenset[int]],
    dict[tuple[str, ...], frozenset[int]],
    Lookup,
]:
    """One field of :func:`sibling_lookup`: its key, memo (results include ``present``),
    the memo's miss handler, the memo of whole lists of texts and the general lookup."""
    by_text: dict[str, frozenset[int]] = {}
    of_text = _memo_miss(classify, present, by_text)
    by_list: dict[tuple[str, ...], frozenset[int]] = {}
    return path.rpartition(".")[2], by_text, of_text, by_list, _general(path, classify, present)


def _derived_lookup(
    getter: Callable[..., tuple[Any, ...]],
    classify: Classifier,
    present: frozenset[int],
) -> Lookup:
    """A derived field itself (``response.success``, ``decision``): one cached scalar, or
    the leaves already walked (``dataValues``: a body's data values)."""

    def lookup(event: dict[str, Any], cache: Cache) -> frozenset[int] | None:
        leaves = getter(event, cache)
        if not leaves:
            return None
        if len(leaves) == 1:
            v = leaves[0]
            cls = v.__class__
            if cls is bool:
                return classify("true" if v else "false") | present
            if cls is str:
                return classify(v) | present
        return _leaves_hits(leaves, classify, present)

    return lookup


# --- many fields under one derived root in one walk ------------------------------------------


class _Level:
    """One trie level: per key, the level below and the guarded field ending there, plus the
    dotted keys the per-field walker would try at this depth when a key is absent."""

    __slots__ = ("alts", "children", "dotted")

    def __init__(self) -> None:
        self.children: dict[str, tuple[_Level | None, tuple[Classifier, frozenset[int]] | None]]
        self.children = {}
        self.alts: dict[str, tuple[str, ...]] = {}  # key -> its dotted alternatives
        self.dotted: frozenset[str] = frozenset()  # all of them

    def add(self, rest: tuple[str, ...], end: tuple[Classifier, frozenset[int]]) -> None:
        key = rest[0]
        self.alts[key] = tuple(
            dict.fromkeys(
                self.alts.get(key, ()) + tuple(".".join(rest[:j]) for j in range(len(rest), 1, -1))
            )
        )
        self.dotted = self.dotted.union(self.alts[key])
        below, here = self.children.get(key, (None, None))
        if len(rest) == 1:
            here = end
        else:
            below = below or _Level()
            below.add(rest[1:], end)
        self.children[key] = (below, here)


class _Fallback(Exception):
    """Something only the general walkers handle (a dotted key, a dict or str subclass)."""


def _leaf_hits(
    leaves: Sequence[Any], classify: Classifier, present: frozenset[int], hits: frozenset[int]
) -> frozenset[int]:
    for leaf in leaves:
        cls = leaf.__class__
        if cls is str:
            t = leaf
        elif cls is bool:
            t = "true" if leaf else "false"
        elif cls is int or cls is float:
            t = str(leaf)
        elif isinstance(leaf, (str, int, float)):
            raise _Fallback
        else:
            if leaf is not None and present:  # a mapping: present, but no text
                hits = hits | present
            continue
        found = classify(t)
        if present:
            found = found | present
        if found:
            hits = found if not hits else hits | found
    return hits


def _visit(value: Any, below: _Level | None, here: Any, hits: frozenset[int]) -> frozenset[int]:
    flat: Sequence[Any]
    if value.__class__ is list:
        flat = []
        flatten_into(value, flat)
    else:
        flat = (value,)
    if here is not None:
        hits = _leaf_hits(flat, here[0], here[1], hits)
    if below is not None:
        hits = _walk(flat, below, hits)
    return hits


def _walk(nodes: Sequence[Any], level: _Level, hits: frozenset[int]) -> frozenset[int]:
    children = level.children
    for node in nodes:
        if node.__class__ is not dict:
            if isinstance(node, dict):
                raise _Fallback
            continue
        if len(node) <= len(children):
            # Few keys (a securityContext): look at what is there.
            for key, value in node.items():
                entry = children.get(key)
                if entry is None:
                    if key in level.dotted:
                        raise _Fallback  # a dotted alternative: the walkers decide
                    continue
                hits = _visit(value, entry[0], entry[1], hits)
        else:
            # Many keys (a whole event): look up what the fields need.
            for key, (below, here) in children.items():
                value = node.get(key, _MISSING)
                if value is _MISSING:
                    for alt in level.alts[key]:
                        if alt in node:
                            raise _Fallback
                    continue
                hits = _visit(value, below, here, hits)
    return hits


def nested_lookup(fields: Sequence[tuple[str, Classifier, frozenset[int]]]) -> Lookup:
    """One lookup for many fields sharing derived roots (a pod spec and its containers).

    Equivalent to the union of each field's :func:`field_lookup` (None and empty alike), but
    shared prefixes are walked once.

    >>> look = nested_lookup([
    ...     ("podSpec.hostPID", classifier([(0, exact_test(frozenset({"true"})))]), NOTHING),
    ...     ("podSpec.allContainers.image", classifier([(1, exact_test(frozenset({"x"})))]),
    ...      NOTHING)])
    >>> sorted(look({"requestObject": {"kind": "Pod", "spec": {"hostPID": True,
    ...     "containers": [{"image": "x"}]}}}, {}))
    [0, 1]
    """
    groups: dict[str, _Level] = {}
    direct: dict[str, list[tuple[Classifier, frozenset[int]]]] = {}
    for path, classify, present in fields:
        split = derived_root(path)
        root, rest = split if split is not None else ("", tuple(path.split(".")))
        if rest:
            groups.setdefault(root, _Level()).add(rest, (classify, present))
        else:
            direct.setdefault(root, []).append((classify, present))
    plan = [
        (compile_path(root) if root else None, groups.get(root), direct.get(root, []))
        for root in dict.fromkeys([*groups, *direct])
    ]
    fallback = [_general(path, classify, present) for path, classify, present in fields]

    def lookup(event: dict[str, Any], cache: Cache) -> frozenset[int] | None:
        hits = NOTHING
        try:
            for get_root, level, ends in plan:
                roots = get_root(event, cache) if get_root is not None else (event,)
                if not roots:
                    continue
                for classify, present in ends:
                    hits = _leaf_hits(roots, classify, present, hits)
                if level is not None:
                    hits = _walk(roots, level, hits)
        except _Fallback:
            hits = NOTHING
            for each in fallback:
                found = each(event, cache)
                if found:
                    hits = found if not hits else hits | found
        return hits

    return lookup
