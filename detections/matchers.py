"""Sigma value modifiers compiled into field predicates ``(event, cache) -> bool``.

Semantics (Sigma specification v2): a list of values means OR (AND with ``|all``); strings are
case-insensitive unless ``|cased``; ``*`` and ``?`` are wildcards, ``\\`` escapes them; event
lists are crossed (any element may match). Numbers and booleans in events are compared by their
text (``401`` matches ``'401'``), so a non-numeric string can never equal a number field.

>>> pred = compile_match("user.username", ("startswith",), ("system:serviceaccount:",))
>>> pred({"user": {"username": "System:ServiceAccount:kube-system:x"}}, {})
True
>>> compile_match("responseStatus.code", ("gte",), (400,))({"responseStatus": {"code": 403}}, {})
True
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import re2

from detections.fields import Getter, compile_path, is_derived, resolve_alias

Predicate = Callable[[dict[str, Any], dict[str, Any]], bool]

#: Longest text a ``|re`` pattern is run against (RE2 is linear, this bounds the constant).
MAX_REGEX_INPUT = 65_536

MATCH_TYPES = (
    "contains",
    "startswith",
    "endswith",
    "re",
    "cidr",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
    "fieldref",
)
TRANSFORMS = ("expand", "base64", "base64offset")
REGEX_FLAGS = {"i": "i", "ignorecase": "i", "m": "m", "multiline": "m", "s": "s", "dotall": "s"}
FLAGS = ("all", "cased")
MODIFIERS = (*MATCH_TYPES, *TRANSFORMS, *FLAGS, *REGEX_FLAGS)

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False

#: Distinct texts one memoized test remembers before it starts afresh (bounds memory).
MEMO_ENTRIES = 2048
#: Longer texts are tested every time: they rarely repeat and would bloat the memo.
MEMO_MAX_TEXT = 256

_T = TypeVar("_T")


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


def _lowered(test: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda t: test(t.lower())


class MatchSpecError(ValueError):
    """A field's modifiers or values are invalid; ``index`` points at the offending value."""

    def __init__(self, message: str, index: int | None = None, suggestion: str | None = None):
        super().__init__(message)
        self.message = message
        self.index = index
        self.suggestion = suggestion


# --- wildcard strings -------------------------------------------------------------------------

STAR = object()
QMARK = object()
Token = str | object


def parse_wildcards(text: str) -> list[Token]:
    """Split a Sigma string into literal characters and ``*``/``?`` wildcards.

    ``\\*``, ``\\?`` and ``\\\\`` are escapes; any other backslash is literal.

    >>> show = {id(STAR): "*", id(QMARK): "?"}
    >>> [show.get(id(t), t) for t in parse_wildcards(r"a\\*b*?")]
    ['a', '*', 'b', '*', '?']
    """
    out: list[Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in "*?\\":
            out.append(text[i + 1])
            i += 2
            continue
        out.append(STAR if ch == "*" else QMARK if ch == "?" else ch)
        i += 1
    return out


_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def _re2_escape(text: str) -> str:
    return "".join("\\" + c if c in _RE2_SPECIAL else c for c in text)


@dataclass(frozen=True, slots=True)
class _Pattern:
    kind: str  # exact | prefix | suffix | contains | any | glob
    text: str
    regex: Any = None


def _classify(tokens: list[Token]) -> _Pattern:
    # collapse runs of '*'
    compact: list[Token] = []
    for t in tokens:
        if t is STAR and compact and compact[-1] is STAR:
            continue
        compact.append(t)
    if not compact:
        return _Pattern("exact", "")
    inner = compact
    lead = inner[0] is STAR
    trail = len(inner) > 1 and inner[-1] is STAR
    if lead and len(inner) == 1:
        return _Pattern("any", "")
    core = inner[1 if lead else 0 : len(inner) - 1 if trail else len(inner)]
    if all(isinstance(t, str) for t in core):
        lit = "".join(t for t in core if isinstance(t, str))
        kind = {
            (False, False): "exact",
            (True, False): "suffix",
            (False, True): "prefix",
            (True, True): "contains",
        }
        return _Pattern(kind[(lead, trail)], lit)
    regex = "".join(
        ".*" if t is STAR else "." if t is QMARK else _re2_escape(t) if isinstance(t, str) else ""
        for t in compact
    )
    return _Pattern("glob", regex, re2.compile(f"(?s)^(?:{regex})$", _RE2_OPTIONS))


def _text(value: Any) -> str | None:
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
    return tuple(t for t in map(_text, leaves) if t is not None)


def _texts_compute(
    getter: Getter, lower: bool, path: str | None = None
) -> Callable[..., tuple[str, ...]]:
    """Leaves of a field as texts (lowered when ``lower``), uncached.

    For plain paths of up to three keys, a single string or integer reached through plain
    dicts is returned directly; anything else (lists, absent keys, dotted keys, derived
    fields) takes the general walker.
    """

    def general(event: dict[str, Any], cache: dict[str, Any]) -> tuple[str, ...]:
        leaves = getter(event, cache)
        if len(leaves) == 1 and leaves[0].__class__ is str:
            return (leaves[0].lower(),) if lower else leaves
        out = []
        for leaf in leaves:
            t = _text(leaf)
            if t is not None:
                out.append(t.lower() if lower else t)
        return tuple(out)

    keys = tuple(path.split(".")) if path and not is_derived(path) else ()
    if not 1 <= len(keys) <= 3:
        return general
    a, b, c = (*keys, "", "")[:3]
    depth = len(keys)

    def fast(event: dict[str, Any], cache: dict[str, Any]) -> tuple[str, ...]:
        v: Any = event.get(a)
        if depth > 1:
            if v.__class__ is not dict:
                return general(event, cache)
            v = v.get(b)
            if depth > 2:
                if v.__class__ is not dict:
                    return general(event, cache)
                v = v.get(c)
        if v.__class__ is str:
            return (v.lower(),) if lower else (v,)
        if v.__class__ is int:
            return (str(v),)
        return general(event, cache)

    return fast


def text_source(path: str) -> tuple[str, Callable[..., tuple[str, ...]]]:
    """The per-event cache slot and compute function of a field's lower-cased texts.

    Predicates use the same slot, so whoever reads the field first pays for it once.
    """
    return "L" + path, _texts_compute(compile_path(path), True, path)


def _texts_getter(path: str, getter: Getter, lower: bool) -> Callable[..., tuple[str, ...]]:
    """Leaves of ``path`` as texts, computed (and lowered) at most once per event."""
    slot = ("L" if lower else "T") + path
    compute = _texts_compute(getter, lower, path)

    def texts(event: dict[str, Any], cache: dict[str, Any]) -> tuple[str, ...]:
        got: tuple[str, ...] | None = cache.get(slot)
        if got is None:
            got = cache[slot] = compute(event, cache)
        return got

    return texts


def _leaves_getter(path: str, getter: Getter) -> Getter:
    slot = "R" + path

    def leaves(event: dict[str, Any], cache: dict[str, Any]) -> tuple[Any, ...]:
        got: tuple[Any, ...] | None = cache.get(slot)
        if got is None:
            got = getter(event, cache)
            cache[slot] = got
        return got

    return leaves


def _string_test(patterns: Sequence[_Pattern]) -> Callable[[str], bool]:
    """One text test for an OR of patterns, grouping literals for set/tuple lookups."""
    exact = frozenset(p.text for p in patterns if p.kind == "exact")
    prefixes = tuple(p.text for p in patterns if p.kind == "prefix")
    suffixes = tuple(p.text for p in patterns if p.kind == "suffix")
    contains = tuple(p.text for p in patterns if p.kind == "contains")
    glob_sources = [p.text for p in patterns if p.kind == "glob"]
    # One RE2 pass for all wildcard patterns instead of one call each.
    glob: Any = (
        re2.compile("(?s)^(?:" + "|".join(glob_sources) + ")$", _RE2_OPTIONS)
        if glob_sources
        else None
    )
    if any(p.kind == "any" for p in patterns):
        return lambda t: True
    if not (prefixes or suffixes or contains or glob):
        return exact.__contains__

    def test(t: str) -> bool:
        if t in exact:
            return True
        if prefixes and t.startswith(prefixes):
            return True
        if suffixes and t.endswith(suffixes):
            return True
        for c in contains:
            if c in t:
                return True
        return glob is not None and glob.search(t) is not None

    return test


def _base64_variants(value: str, offset: bool) -> list[str]:
    raw = value.encode()
    if not offset:
        return [base64.b64encode(raw).decode()]
    starts, ends = (0, 2, 3), (None, -3, -2)
    return [
        base64.b64encode(i * b" " + raw)[starts[i] : ends[(len(raw) + i) % 3]].decode()
        for i in range(3)
    ]


def expand_placeholders(
    value: str, lists: Mapping[str, Sequence[Any]]
) -> tuple[list[Any], str | None]:
    """Replace ``%name%`` placeholders with each list value; returns (values, unknown name).

    >>> expand_placeholders("%admins%", {"admins": ["alice", "bob"]})
    (['alice', 'bob'], None)
    >>> expand_placeholders("x-%nope%", {"admins": []})
    ([], 'nope')
    """
    if value.startswith("%") and value.endswith("%") and value.count("%") == 2:
        name = value[1:-1]
        return (list(lists[name]), None) if name in lists else ([], name)
    results = [""]
    rest = value
    while True:
        start = rest.find("%")
        end = rest.find("%", start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            results = [r + rest for r in results]
            return results, None
        name = rest[start + 1 : end]
        if name not in lists:
            return [], name
        results = [r + rest[:start] + str(item) for r in results for item in lists[name]]
        rest = rest[end + 1 :]


def split_modifiers(key: str) -> tuple[str, tuple[str, ...]]:
    """``'user.username|startswith|cased'`` -> ``('user.username', ('startswith', 'cased'))``."""
    field, *mods = key.split("|")
    return field, tuple(mods)


def check_modifiers(modifiers: Sequence[str]) -> None:
    """Raise MatchSpecError for unknown or incompatible modifier combinations."""
    from detections.errors import suggest

    for mod in modifiers:
        if mod not in MODIFIERS:
            hint = " (Windows-only modifiers are not supported)" if mod in _WINDOWS else ""
            raise MatchSpecError(
                f"unknown modifier '{mod}'{hint}", suggestion=suggest(mod, MODIFIERS)
            )
    types = [m for m in modifiers if m in MATCH_TYPES]
    if len(types) > 1:
        raise MatchSpecError(f"modifiers {' and '.join(types)} cannot be combined")
    mtype = types[0] if types else None
    flags = [m for m in modifiers if m in REGEX_FLAGS]
    if flags and mtype != "re":
        raise MatchSpecError(f"modifier '{flags[0]}' is a regex flag and needs '|re' before it")
    if "cased" in modifiers and mtype in ("re", "cidr", "exists", "gt", "gte", "lt", "lte"):
        raise MatchSpecError(f"'cased' has no meaning with '{mtype}'")
    if mtype in ("exists", "cidr", "gt", "gte", "lt", "lte", "re", "fieldref") and any(
        m in ("base64", "base64offset") for m in modifiers
    ):
        raise MatchSpecError(f"base64 modifiers cannot be combined with '{mtype}'")
    if "base64offset" in modifiers and mtype != "contains":
        raise MatchSpecError("'base64offset' needs '|contains' (it yields fragments)")
    if "base64" in modifiers and "base64offset" in modifiers:
        raise MatchSpecError("use either 'base64' or 'base64offset', not both")


_WINDOWS = ("windash", "wide", "utf16", "utf16le", "utf16be")


def compile_match(
    path: str,
    modifiers: Sequence[str],
    values: Sequence[Any],
    lists: Mapping[str, Sequence[Any]] | None = None,
) -> Predicate:
    """Compile one ``field|modifiers: values`` entry into a predicate; raises MatchSpecError."""
    check_modifiers(modifiers)
    mods = set(modifiers)
    raw = compile_path(path)
    getter = _leaves_getter(path, raw)
    if not values:
        raise MatchSpecError("no values given (an empty list can never match)")

    for i, v in enumerate(values):
        if isinstance(v, (dict, list)):
            raise MatchSpecError("a value must be a scalar, not a nested list or mapping", i)

    # `|expand` first: every other modifier sees the list values
    expanded_values: list[Any] = []
    for i, v in enumerate(values):
        if "expand" in mods:
            if not isinstance(v, str):
                raise MatchSpecError(
                    f"'expand' needs a string with %name% placeholders, got {v!r}", i
                )
            if "%" not in v:
                raise MatchSpecError("'expand' value has no %name% placeholder", i)
            expanded, unknown = expand_placeholders(v, lists or {})
            if unknown is not None:
                from detections.errors import suggest

                raise MatchSpecError(
                    f"unknown list '{unknown}'", i, suggest(unknown, list(lists or {}))
                )
            expanded_values.extend(expanded)
        else:
            expanded_values.append(v)
    if not expanded_values and "exists" not in mods:
        # Only `|expand` of empty lists gets here: an OR over nothing, and `|all` of nothing
        # must not turn into "everything" either. An empty list matches no event.
        return _never
    try:
        return _compile_values(path, modifiers, expanded_values, raw, getter)
    except MatchSpecError as exc:
        if "expand" in mods and exc.index is not None:
            raise MatchSpecError(f"{exc.message} (from an expanded list)", None) from None
        raise


def _compile_values(
    path: str, modifiers: Sequence[str], values: Sequence[Any], raw: Getter, getter: Getter
) -> Predicate:
    """compile_match after list expansion."""
    mods = set(modifiers)
    mtype = next((m for m in modifiers if m in MATCH_TYPES), None)
    match_all = "all" in mods
    if mtype == "exists":
        if len(values) != 1 or not isinstance(values[0], bool):
            raise MatchSpecError("'exists' takes a single true or false")
        want = values[0]

        def exists(event: dict[str, Any], cache: dict[str, Any]) -> bool:
            return any(v is not None for v in getter(event, cache)) is want

        return exists

    if mtype in ("gt", "gte", "lt", "lte"):
        bounds = []
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise MatchSpecError(f"'{mtype}' needs a number, got {v!r}", i)
            bounds.append(float(v))
        compare: Callable[[float, float], bool] = {
            "gt": float.__gt__,
            "gte": float.__ge__,
            "lt": float.__lt__,
            "lte": float.__le__,
        }[mtype]
        return _combine(getter, [_numeric_test(compare, b) for b in bounds], match_all)

    if mtype == "cidr":
        nets = []
        for i, v in enumerate(values):
            try:
                nets.append(ipaddress.ip_network(str(v), strict=False))
            except ValueError:
                raise MatchSpecError(f"invalid CIDR {v!r}", i) from None
        if match_all:
            return _combine(getter, [_cidr_test(n) for n in nets], True)
        return _any_address(getter, cidr_test(nets))

    strings = list(values)

    if mtype == "re":
        flags = "".join(sorted({REGEX_FLAGS[m] for m in modifiers if m in REGEX_FLAGS}))
        regexes = []
        for i, v in enumerate(strings):
            if not isinstance(v, str):
                raise MatchSpecError(f"'re' needs a string pattern, got {v!r}", i)
            try:
                regexes.append(re2.compile((f"(?{flags})" if flags else "") + v, _RE2_OPTIONS))
            except re2.error as exc:
                detail = (
                    exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
                )
                raise MatchSpecError(f"regex {v!r} is not valid RE2 syntax: {detail}", i) from None
        texts = _texts_getter(path, raw, lower=False)
        if match_all:
            return _combine_texts(texts, [memoize(_regex_test(r)) for r in regexes], True)
        return _any_text("T" + path, _texts_compute(raw, False, path), _regex_any(regexes))

    if mtype == "fieldref":
        lower = "cased" not in mods
        others = []
        for i, v in enumerate(strings):
            if not isinstance(v, str) or not v:
                raise MatchSpecError(f"'fieldref' needs a field name, got {v!r}", i)
            ref = resolve_alias(v)
            others.append(_texts_getter(ref, compile_path(ref), lower))
        mine = _texts_getter(path, raw, lower)
        return _fieldref(mine, others, match_all)

    # plain / contains / startswith / endswith, possibly base64-encoded
    lower, patterns, null_ok = _string_patterns(modifiers, strings)
    texts = _texts_getter(path, raw, lower=False)
    if not patterns and not null_ok:
        return _never  # an |expand of an empty list: OR over nothing
    if match_all:
        tests = [_raw_test(_string_test(g), lower) for g in patterns]
        return _combine_texts(texts, tests, True)
    flat = [p for g in patterns for p in g]
    if not flat:  # only null: the field is absent or null
        return lambda event, cache: all(v is None for v in getter(event, cache))
    test = _raw_test(_string_test(flat), lower)
    if null_ok:

        def null_or(event: dict[str, Any], cache: dict[str, Any]) -> bool:
            leaves = getter(event, cache)
            if all(v is None for v in leaves):
                return True
            return any(test(t) for t in texts(event, cache))

        return null_or
    if all(p.kind == "exact" for p in flat):
        return _any_exact(
            ("L" if lower else "T") + path, _texts_compute(raw, lower, path), {p.text for p in flat}
        )
    return _any_text("T" + path, _texts_compute(raw, False, path), test)


def _raw_test(test: Callable[[str], bool], lower: bool) -> Callable[[str], bool]:
    """A memoized test of an event's own text (lowered first when the match ignores case)."""
    return memoize(_lowered(test) if lower else test)


def _regex_any(regexes: Sequence[Any]) -> Callable[[str], bool]:
    tests = [_regex_test(r) for r in regexes]
    return memoize(lambda t: any(test(t) for test in tests))


def _string_patterns(
    modifiers: Sequence[str], strings: Sequence[Any]
) -> tuple[bool, list[list[_Pattern]], bool]:
    """(lower-case?, one OR-group of patterns per value, null allowed?) for string matches."""
    mods = set(modifiers)
    mtype = next((m for m in modifiers if m in MATCH_TYPES), None)
    match_all = "all" in mods
    lower = "cased" not in mods and not ({"base64", "base64offset"} & mods)
    null_ok = False
    patterns: list[list[_Pattern]] = []  # one OR-group per original value (for |all)
    for i, v in enumerate(strings):
        if v is None:
            if mtype is not None or match_all:
                raise MatchSpecError(f"null cannot be used with '{mtype or 'all'}'", i)
            null_ok = True
            continue
        text = _text(v)
        if text is None:  # pragma: no cover - scalars only reach here
            raise MatchSpecError(f"unsupported value {v!r}", i)
        group: list[_Pattern] = []
        if "base64" in mods or "base64offset" in mods:
            if not isinstance(v, str):
                raise MatchSpecError(f"base64 modifiers need a string, got {v!r}", i)
            variants: list[list[Token]] = [
                list(s) for s in _base64_variants(v, "base64offset" in mods)
            ]
        else:
            variants = [parse_wildcards(text.lower() if lower else text)]
        for tokens in variants:
            toks: list[Token] = list(tokens)
            if mtype in ("contains", "startswith") and (not toks or toks[-1] is not STAR):
                toks.append(STAR)
            if mtype in ("contains", "endswith") and (not toks or toks[0] is not STAR):
                toks.insert(0, STAR)
            group.append(_classify(toks))
        patterns.append(group)
    return lower, patterns, null_ok


#: Modifiers whose comparison is a test of each text on its own (usable as a guard).
_TEXT_MODIFIERS = frozenset(
    {"contains", "startswith", "endswith", "re", "cidr", "all", "cased", "expand", "base64"}
    | {"base64offset", *REGEX_FLAGS}
)


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
    mods = set(modifiers)
    if mods - _TEXT_MODIFIERS or any(v is None for v in values):
        return None
    expanded: list[Any] = []
    for v in values:
        if "expand" in mods:
            if not isinstance(v, str):
                return None
            found, unknown = expand_placeholders(v, lists)
            if unknown is not None:
                return None
            expanded.extend(found)
        else:
            expanded.append(v)
    if not expanded:
        return lambda t: False
    if "cidr" in mods:
        try:
            nets = [ipaddress.ip_network(str(v), strict=False) for v in expanded]
        except ValueError:
            return None
        return cidr_test(nets[:1] if "all" in mods else nets)
    if "re" in mods:
        flags = "".join(sorted({REGEX_FLAGS[m] for m in modifiers if m in REGEX_FLAGS}))
        regexes = [
            re2.compile((f"(?{flags})" if flags else "") + str(v), _RE2_OPTIONS)
            for v in (expanded[:1] if "all" in mods else expanded)
        ]
        return _regex_any(regexes)
    lower, patterns, _ = _string_patterns(modifiers, expanded)
    group = patterns[0] if "all" in mods else [p for g in patterns for p in g]
    return _raw_test(_string_test(group), lower)


def _never(event: dict[str, Any], cache: dict[str, Any]) -> bool:
    return False


def _any_exact(slot: str, compute: Callable[..., tuple[str, ...]], values: set[str]) -> Predicate:
    """Hot path: any text of the field equals one of ``values`` (texts cached per event)."""
    exact = frozenset(values)

    def pred(event: dict[str, Any], cache: dict[str, Any]) -> bool:
        ts = cache.get(slot)
        if ts is None:
            ts = cache[slot] = compute(event, cache)
        for t in ts:  # noqa: SIM110 - a plain loop is faster on the hot path
            if t in exact:
                return True
        return False

    return pred


def _any_text(
    slot: str, compute: Callable[..., tuple[str, ...]], test: Callable[[str], bool]
) -> Predicate:
    """Hot path: any text of the field passes ``test`` (texts cached per event)."""

    def pred(event: dict[str, Any], cache: dict[str, Any]) -> bool:
        ts = cache.get(slot)
        if ts is None:
            ts = cache[slot] = compute(event, cache)
        for t in ts:  # noqa: SIM110 - a plain loop is faster on the hot path
            if test(t):
                return True
        return False

    return pred


def _combine_texts(
    texts: Callable[..., tuple[str, ...]], tests: list[Callable[[str], bool]], match_all: bool
) -> Predicate:
    if match_all:

        def every(event: dict[str, Any], cache: dict[str, Any]) -> bool:
            ts = texts(event, cache)
            return all(any(test(t) for t in ts) for test in tests)

        return every

    def some(event: dict[str, Any], cache: dict[str, Any]) -> bool:
        ts = texts(event, cache)
        return any(test(t) for test in tests for t in ts)

    return some


def _combine(getter: Getter, tests: list[Callable[[Any], bool]], match_all: bool) -> Predicate:
    if match_all:
        return lambda ev, c: all(any(t(v) for v in getter(ev, c)) for t in tests)
    return lambda ev, c: any(t(v) for v in getter(ev, c) for t in tests)


def _regex_test(regex: Any) -> Callable[[str], bool]:
    return lambda t: regex.search(t[:MAX_REGEX_INPUT]) is not None


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _numeric_test(compare: Callable[[float, float], bool], bound: float) -> Callable[[Any], bool]:
    def test(value: Any) -> bool:
        n = _as_number(value)
        return n is not None and compare(n, bound)

    return test


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def cidr_test(nets: Sequence[Network]) -> Callable[[str], bool]:
    """Whether an address text lies in any of ``nets``: memoized, one set lookup per prefix
    length, so a feed of thousands of Tor exit nodes costs what a handful does.

    >>> test = cidr_test([ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fc00::/7")])
    >>> test("10.1.2.3"), test("11.0.0.1"), test("fd00::1"), test("not an address")
    (True, False, True, False)
    """
    # (version, prefix length) -> network numbers shifted down to their prefix
    tables: dict[tuple[int, int], set[int]] = {}
    for net in nets:
        shift = net.max_prefixlen - net.prefixlen
        tables.setdefault((net.version, net.prefixlen), set()).add(
            int(net.network_address) >> shift
        )
    by_version = {
        version: tuple(
            (bits - length, frozenset(numbers))
            for (v, length), numbers in sorted(tables.items())
            if v == version
        )
        for version, bits in ((4, 32), (6, 128))
    }

    def test(text: str) -> bool:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return False
        number = int(address)
        return any(number >> shift in numbers for shift, numbers in by_version[address.version])

    return memoize(test)


def _any_address(getter: Getter, test: Callable[[str], bool]) -> Predicate:
    """Any string leaf of the field passes the (memoized) address test."""

    def pred(event: dict[str, Any], cache: dict[str, Any]) -> bool:
        for leaf in getter(event, cache):  # noqa: SIM110 - a plain loop is faster on the hot path
            if isinstance(leaf, str) and test(leaf):
                return True
        return False

    return pred


def _cidr_test(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Callable[[Any], bool]:
    def test(value: Any) -> bool:
        if not isinstance(value, str):
            return False
        try:
            return ipaddress.ip_address(value) in net
        except ValueError:
            return False

    return test


def _fieldref(
    mine: Callable[..., tuple[str, ...]],
    others: list[Callable[..., tuple[str, ...]]],
    match_all: bool,
) -> Predicate:
    def pred(event: dict[str, Any], cache: dict[str, Any]) -> bool:
        ts = set(mine(event, cache))
        checks = (bool(ts.intersection(other(event, cache))) for other in others)
        return all(checks) if match_all else any(checks)

    return pred
