"""Plain, ``|contains``, ``|startswith``, ``|endswith`` with Sigma wildcards; base64 encodings."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from detections.matchers import (
    MatchSpecError,
    Predicate,
    any_exact,
    any_text,
    cached_texts,
    combine_texts,
    never,
    raw_test,
    text_of,
)
from detections.modifiers.base import Encoding, MatchType, Spec, Target
from detections.modifiers.regex import compile_re2

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
class Pattern:
    """One value as a string test: ``kind`` is exact, prefix, suffix, contains, any or glob."""

    kind: str
    text: str


def classify(tokens: list[Token]) -> Pattern:
    """The cheapest test for a token list (a literal lookup unless inner wildcards remain)."""
    compact: list[Token] = []
    for t in tokens:  # collapse runs of '*'
        if t is STAR and compact and compact[-1] is STAR:
            continue
        compact.append(t)
    if not compact:
        return Pattern("exact", "")
    lead = compact[0] is STAR
    trail = len(compact) > 1 and compact[-1] is STAR
    if lead and len(compact) == 1:
        return Pattern("any", "")
    core = compact[1 if lead else 0 : len(compact) - 1 if trail else len(compact)]
    if all(isinstance(t, str) for t in core):
        lit = "".join(t for t in core if isinstance(t, str))
        kind = {
            (False, False): "exact",
            (True, False): "suffix",
            (False, True): "prefix",
            (True, True): "contains",
        }
        return Pattern(kind[(lead, trail)], lit)
    regex = "".join(
        ".*" if t is STAR else "." if t is QMARK else _re2_escape(t) if isinstance(t, str) else ""
        for t in compact
    )
    return Pattern("glob", regex)


def string_test(patterns: Sequence[Pattern]) -> Callable[[str], bool]:
    """One text test for an OR of patterns, grouping literals for set/tuple lookups."""
    exact = frozenset(p.text for p in patterns if p.kind == "exact")
    prefixes = tuple(p.text for p in patterns if p.kind == "prefix")
    suffixes = tuple(p.text for p in patterns if p.kind == "suffix")
    contains = tuple(p.text for p in patterns if p.kind == "contains")
    glob_sources = [p.text for p in patterns if p.kind == "glob"]
    # One RE2 pass for all wildcard patterns instead of one call each.
    glob: Any = compile_re2("(?s)^(?:" + "|".join(glob_sources) + ")$") if glob_sources else None
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


class StringMatch(MatchType):
    """Equality with wildcards; ``lead``/``trail`` add an implicit ``*`` before/after."""

    encodable = True

    def __init__(self, name: str, *, lead: bool, trail: bool) -> None:
        super().__init__(name)
        self.lead = lead
        self.trail = trail

    def patterns(
        self, spec: Spec, strings: Sequence[Any]
    ) -> tuple[bool, list[list[Pattern]], bool]:
        """(lower-case?, one OR-group of patterns per value, null allowed?)."""
        lower = not spec.cased and spec.encoding is None
        null_ok = False
        groups: list[list[Pattern]] = []  # one OR-group per original value (for |all)
        for i, v in enumerate(strings):
            if v is None:
                if self.name or spec.match_all:
                    raise MatchSpecError(f"null cannot be used with '{self.name or 'all'}'", i)
                null_ok = True
                continue
            text = text_of(v)
            if text is None:  # pragma: no cover - scalars only reach here
                raise MatchSpecError(f"unsupported value {v!r}", i)
            if spec.encoding is not None:
                if not isinstance(v, str):
                    raise MatchSpecError(f"base64 modifiers need a string, got {v!r}", i)
                variants: list[list[Token]] = [list(s) for s in spec.encoding.variants(v)]
            else:
                variants = [parse_wildcards(text.lower() if lower else text)]
            group: list[Pattern] = []
            for tokens in variants:
                toks: list[Token] = list(tokens)
                if self.trail and (not toks or toks[-1] is not STAR):
                    toks.append(STAR)
                if self.lead and (not toks or toks[0] is not STAR):
                    toks.insert(0, STAR)
                group.append(classify(toks))
            groups.append(group)
        return lower, groups, null_ok

    def compile(self, target: Target, spec: Spec, values: Sequence[Any]) -> Predicate:
        lower, groups, null_ok = self.patterns(spec, values)
        texts = cached_texts(target.path, False)
        if not groups and not null_ok:
            return never  # an |expand of an empty list: OR over nothing
        if spec.match_all:
            tests = [raw_test(string_test(g), lower) for g in groups]
            return combine_texts(texts, tests, True)
        flat = [p for g in groups for p in g]
        getter = target.leaves
        if not flat:  # only null: the field is absent or null
            return lambda event, cache: all(v is None for v in getter(event, cache))
        test = raw_test(string_test(flat), lower)
        if null_ok:

            def null_or(event: dict[str, Any], cache: Any) -> bool:
                leaves = getter(event, cache)
                if all(v is None for v in leaves):
                    return True
                return any(test(t) for t in texts(event, cache))

            return null_or
        if all(p.kind == "exact" for p in flat):
            return any_exact(target.path, lower, {p.text for p in flat})
        return any_text(target.path, test)

    def text_test(self, spec: Spec, values: Sequence[Any]) -> Callable[[str], bool] | None:
        lower, groups, _ = self.patterns(spec, values)
        group = groups[0] if spec.match_all else [p for g in groups for p in g]
        return raw_test(string_test(group), lower)


class Base64(Encoding):
    """``|base64``: look for the base64 encoding of the value."""

    def variants(self, value: str) -> list[str]:
        return [base64.b64encode(value.encode()).decode()]


class Base64Offset(Encoding):
    """``|base64offset``: the three fragments the value's encoding can show inside a longer
    encoded text (one per alignment)."""

    needs = "contains"
    needs_reason = "it yields fragments"

    def variants(self, value: str) -> list[str]:
        raw = value.encode()
        starts, ends = (0, 2, 3), (None, -3, -2)
        return [
            base64.b64encode(i * b" " + raw)[starts[i] : ends[(len(raw) + i) % 3]].decode()
            for i in range(3)
        ]
