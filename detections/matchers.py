"""Field predicates ``(event, cache) -> bool`` from Sigma ``field|modifiers: values`` entries.

Semantics (Sigma specification v2): a list of values means OR (AND with ``|all``); strings are
case-insensitive unless ``|cased``; ``*`` and ``?`` are wildcards, ``\\`` escapes them; event
lists are crossed (any element may match). Numbers and booleans in events are compared by their
text (``401`` matches ``'401'``), so a non-numeric string can never equal a number field.

What each modifier means lives in :mod:`detections.modifiers` (one class per modifier, one
registry); this module holds the entry points and the runtime pieces every modifier builds its
predicate from: the per-event cached texts of a field, memoized text tests and combinators.

>>> pred = compile_match("user.username", ("startswith",), ("system:serviceaccount:",))
>>> pred({"user": {"username": "System:ServiceAccount:kube-system:x"}}, {})
True
>>> compile_match("responseStatus.code", ("gte",), (400,))({"responseStatus": {"code": 403}}, {})
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from detections.fields import (
    Cache,
    Getter,
    Slot,
    compile_path,
    fast_path,
    leaves_slot,
    texts_slot,
)

Predicate = Callable[[dict[str, Any], Cache], bool]
#: ``(event, cache) -> texts`` of one field.
Texts = Callable[[dict[str, Any], Cache], tuple[str, ...]]

#: Distinct texts one memoized test remembers before it starts afresh (bounds memory).
MEMO_ENTRIES = 2048
#: Longer texts are tested every time: they rarely repeat and would bloat the memo.
MEMO_MAX_TEXT = 256

_T = TypeVar("_T")


class MatchSpecError(ValueError):
    """A field's modifiers or values are invalid; ``index`` points at the offending value."""

    def __init__(self, message: str, index: int | None = None, suggestion: str | None = None):
        super().__init__(message)
        self.message = message
        self.index = index
        self.suggestion = suggestion


def memoize(test: Callable[[str], _T]) -> Callable[[str], _T]:
    """``test`` with a bounded memo of its results, keyed by the text.

    Field values repeat endlessly in audit logs (user agents, user names, images), so a
    pattern list is run once per distinct value instead of once per event. The memo is
    cleared when full, so a flood of unique values costs what it would without one.

    >>> calls = []
    >>> slow = memoize(lambda t: calls.append(t) or t.startswith("kube"))
    >>> slow("kubectl/v1.31"), slow("kubectl/v1.31"), len(calls)
    (True, True, 1)
    """
    memo: dict[str, _T] = {}
    get = memo.get

    def check(text: str) -> _T:
        found = get(text)
        if found is None:
            found = test(text)
            if len(text) <= MEMO_MAX_TEXT:
                if len(memo) >= MEMO_ENTRIES:
                    memo.clear()
                memo[text] = found
        return found

    return check


def text_of(value: Any) -> str | None:
    """The text a comparison sees for one leaf (str, number, bool), else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return None


def texts_of(leaves: Sequence[Any]) -> tuple[str, ...]:
    """The text forms (str, number, bool) of a field's leaves, as comparisons see them.

    >>> texts_of(("a", 401, True, None, {"x": 1}))
    ('a', '401', 'true')
    """
    if not leaves:
        return ()
    if len(leaves) == 1 and leaves[0].__class__ is str:
        return tuple(leaves)
    return tuple(t for t in map(text_of, leaves) if t is not None)


# --- a field's texts, computed at most once per event -----------------------------------------


def texts_compute(path: str, lower: bool) -> Texts:
    """Leaves of ``path`` as texts (lowered when ``lower``), uncached.

    A single string or integer reached by the one fast path of :mod:`detections.fields`
    is returned directly; anything else takes the general walker.
    """
    getter = compile_path(path)

    def general(event: dict[str, Any], cache: Cache) -> tuple[str, ...]:
        leaves = getter(event, cache)
        if len(leaves) == 1 and leaves[0].__class__ is str:
            return (leaves[0].lower(),) if lower else leaves
        out = []
        for leaf in leaves:
            t = text_of(leaf)
            if t is not None:
                out.append(t.lower() if lower else t)
        return tuple(out)

    probe = fast_path(path)
    if probe is None:
        return general

    def fast(event: dict[str, Any], cache: Cache) -> tuple[str, ...]:
        v = probe(event)
        if v.__class__ is str:
            return (v.lower(),) if lower else (v,)
        if v.__class__ is int:
            return (str(v),)
        return general(event, cache)

    return fast


def field_texts(path: str, lower: bool) -> tuple[Slot, Texts]:
    """The per-event cache slot and compute function of a field's (lower-cased) texts.

    Predicates of one field share the slot, so whoever reads the field first pays for it once.
    """
    return texts_slot(path, lower), texts_compute(path, lower)


def cached_texts(path: str, lower: bool) -> Texts:
    """Leaves of ``path`` as texts, computed (and lowered) at most once per event."""
    slot, compute = field_texts(path, lower)

    def texts(event: dict[str, Any], cache: Cache) -> tuple[str, ...]:
        got: tuple[str, ...] | None = cache.get(slot)
        if got is None:
            got = cache[slot] = compute(event, cache)
        return got

    return texts


def cached_leaves(path: str, getter: Getter) -> Getter:
    """The leaves ``getter`` walks for ``path``, walked at most once per event."""
    slot = leaves_slot(path)

    def leaves(event: dict[str, Any], cache: Cache) -> tuple[Any, ...]:
        got: tuple[Any, ...] | None = cache.get(slot)
        if got is None:
            got = getter(event, cache)
            cache[slot] = got
        return got

    return leaves


# --- predicates over a field's texts ----------------------------------------------------------


def never(event: dict[str, Any], cache: Cache) -> bool:
    """The predicate of a comparison over no values (an ``|expand`` of empty lists)."""
    return False


def raw_test(test: Callable[[str], bool], lower: bool) -> Callable[[str], bool]:
    """A memoized test of an event's own text (lowered first when the match ignores case)."""
    return memoize((lambda t: test(t.lower())) if lower else test)


def any_exact(path: str, lower: bool, values: set[str]) -> Predicate:
    """Hot path: any text of the field equals one of ``values`` (texts cached per event)."""
    slot, compute = field_texts(path, lower)
    exact = frozenset(values)

    def pred(event: dict[str, Any], cache: Cache) -> bool:
        ts = cache.get(slot)
        if ts is None:
            ts = cache[slot] = compute(event, cache)
        for t in ts:  # noqa: SIM110 - a plain loop is faster on the hot path
            if t in exact:
                return True
        return False

    return pred


def any_text(path: str, test: Callable[[str], bool]) -> Predicate:
    """Hot path: any (un-lowered) text of the field passes ``test`` (texts cached per event)."""
    slot, compute = field_texts(path, False)

    def pred(event: dict[str, Any], cache: Cache) -> bool:
        ts = cache.get(slot)
        if ts is None:
            ts = cache[slot] = compute(event, cache)
        for t in ts:  # noqa: SIM110 - a plain loop is faster on the hot path
            if test(t):
                return True
        return False

    return pred


def combine_texts(texts: Texts, tests: list[Callable[[str], bool]], match_all: bool) -> Predicate:
    """Every (``match_all``) or any test passes on some text of the field."""
    if match_all:

        def every(event: dict[str, Any], cache: Cache) -> bool:
            ts = texts(event, cache)
            return all(any(test(t) for t in ts) for test in tests)

        return every

    def some(event: dict[str, Any], cache: Cache) -> bool:
        ts = texts(event, cache)
        return any(test(t) for test in tests for t in ts)

    return some


def combine(getter: Getter, tests: list[Callable[[Any], bool]], match_all: bool) -> Predicate:
    """Every (``match_all``) or any test passes on some leaf of the field."""
    if match_all:
        return lambda ev, c: all(any(t(v) for v in getter(ev, c)) for t in tests)
    return lambda ev, c: any(t(v) for v in getter(ev, c) for t in tests)


# --- entry points -----------------------------------------------------------------------------


def split_modifiers(key: str) -> tuple[str, tuple[str, ...]]:
    """``'user.username|startswith|cased'`` -> ``('user.username', ('startswith', 'cased'))``."""
    field, *mods = key.split("|")
    return field, tuple(mods)


# The registry is imported inside the entry points: the modifiers build on this module.


def check_modifiers(modifiers: Sequence[str]) -> None:
    """Raise MatchSpecError for unknown or incompatible modifier combinations."""
    from detections.modifiers.registry import check_modifiers as check

    check(modifiers)


def compile_match(
    path: str,
    modifiers: Sequence[str],
    values: Sequence[Any],
    lists: Mapping[str, Sequence[Any]] | None = None,
) -> Predicate:
    """Compile one ``field|modifiers: values`` entry into a predicate; raises MatchSpecError."""
    from detections.modifiers.registry import compile_match as compile_entry

    return compile_entry(path, modifiers, values, lists or {})


def text_test(
    modifiers: Sequence[str], values: Sequence[Any], lists: Mapping[str, Sequence[Any]]
) -> Callable[[str], bool] | None:
    """A memoized test on one (un-lowered) text of a field, if the comparison is text-wise.

    Whenever the comparison holds for an event, at least one text of the field passes the
    test (for ``|all``, the test of the first value): the engine uses it to skip rules with
    one dict lookup per distinct field value. None for null, numeric, exists, fieldref.

    >>> t = text_test(("contains", "expand"), ["%tools%"], {"tools": ["peirates", "kubiscan"]})
    >>> t("Peirates/v1"), t("kubectl/v1.31")
    (True, False)
    """
    from detections.modifiers.registry import text_test as test_of

    return test_of(modifiers, values, lists)
