"""Every modifier by name, and the three things done with them: check, compile, text test.

To add a modifier, write its class next to its kin and register it here with one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from detections.errors import suggest
from detections.fields import compile_path
from detections.matchers import MatchSpecError, Predicate, cached_leaves, never
from detections.modifiers.base import (
    Encoding,
    Flag,
    MatchType,
    Modifier,
    RegexFlag,
    Spec,
    Target,
    Transform,
)
from detections.modifiers.expand import Expand
from detections.modifiers.network import Cidr
from detections.modifiers.numeric import Compare
from detections.modifiers.outside import Outside, outside
from detections.modifiers.presence import Exists, FieldRef
from detections.modifiers.regex import Regex
from detections.modifiers.strings import Base64, Base64Offset, StringMatch

#: name -> modifier. One line per modifier.
MODIFIERS: Mapping[str, Modifier] = {
    m.name: m
    for m in (
        StringMatch("contains", lead=True, trail=True),
        StringMatch("startswith", lead=False, trail=True),
        StringMatch("endswith", lead=True, trail=False),
        Regex("re"),
        Cidr("cidr"),
        Exists("exists"),
        Compare("gt", float.__gt__),
        Compare("gte", float.__ge__),
        Compare("lt", float.__lt__),
        Compare("lte", float.__le__),
        FieldRef("fieldref"),
        Expand("expand"),
        Base64("base64"),
        Base64Offset("base64offset"),
        Flag("all"),
        Outside("outside"),
        Flag("cased"),
        RegexFlag("i", "i"),
        RegexFlag("ignorecase", "i"),
        RegexFlag("m", "m"),
        RegexFlag("multiline", "m"),
        RegexFlag("s", "s"),
        RegexFlag("dotall", "s"),
    )
}

#: Equality with wildcards: the match type of a comparison without one.
PLAIN = StringMatch("", lead=False, trail=False)

#: Modifiers of comparisons that test each text of a field on its own (usable as guards).
TEXT_WISE = frozenset(name for name, m in MODIFIERS.items() if m.text_wise)

_WINDOWS = ("windash", "wide", "utf16", "utf16le", "utf16be")


def check_modifiers(modifiers: Sequence[str]) -> Spec:
    """The resolved modifiers; MatchSpecError for unknown or incompatible combinations."""
    for name in modifiers:
        if name not in MODIFIERS:
            hint = " (Windows-only modifiers are not supported)" if name in _WINDOWS else ""
            raise MatchSpecError(
                f"unknown modifier '{name}'{hint}", suggestion=suggest(name, MODIFIERS)
            )
    mods = [MODIFIERS[n] for n in modifiers]
    types = [m for m in mods if isinstance(m, MatchType)]
    if len(types) > 1:
        raise MatchSpecError(f"modifiers {' and '.join(m.name for m in types)} cannot be combined")
    match = types[0] if types else PLAIN
    for mod in sorted(mods, key=lambda m: m.check_order):
        problem = mod.check(match, modifiers)
        if problem is not None:
            raise MatchSpecError(problem)
    encodings = [m for m in MODIFIERS.values() if isinstance(m, Encoding) and m in mods]
    if len(encodings) > 1:
        raise MatchSpecError(f"use either '{encodings[0].name}' or '{encodings[1].name}', not both")
    return Spec(
        names=tuple(modifiers),
        match=match,
        match_all="all" in modifiers,
        cased="cased" in modifiers,
        encoding=encodings[0] if encodings else None,
        regex_flags="".join(sorted({m.letter for m in mods if isinstance(m, RegexFlag)})),
    )


def _expand(
    spec: Spec, values: Sequence[Any], lists: Mapping[str, Sequence[Any]]
) -> tuple[list[Any], bool]:
    """Values after the transforms (``|expand`` first: every other modifier sees list items),
    and whether any transform applied."""
    transforms = [MODIFIERS[n] for n in spec.names if isinstance(MODIFIERS[n], Transform)]
    if not transforms:
        return list(values), False
    current = list(values)
    for transform in transforms:
        assert isinstance(transform, Transform)
        current = [v for _, items in transform.apply(current, lists) for v in items]
    return current, True


def compile_match(
    path: str, modifiers: Sequence[str], values: Sequence[Any], lists: Mapping[str, Sequence[Any]]
) -> Predicate:
    """Compile one ``field|modifiers: values`` entry into a predicate; raises MatchSpecError."""
    spec = check_modifiers(modifiers)
    raw = compile_path(path)
    target = Target(path, raw, cached_leaves(path, raw))
    if not values:
        raise MatchSpecError("no values given (an empty list can never match)")
    for i, v in enumerate(values):
        if isinstance(v, (dict, list)):
            raise MatchSpecError("a value must be a scalar, not a nested list or mapping", i)
    expanded, transformed = _expand(spec, values, lists)
    if not expanded and not isinstance(spec.match, Exists):
        # Only `|expand` of empty lists gets here: an OR over nothing, and `|all` of nothing
        # must not turn into "everything" either. An empty list matches no event.
        return never
    try:
        if "outside" in spec.names:
            test = spec.match.text_test(spec, expanded)
            if test is None:
                raise MatchSpecError(f"'outside' cannot be combined with '{spec.match.name}'")
            return outside(target, test)
        return spec.match.compile(target, spec, expanded)
    except MatchSpecError as exc:
        if transformed and exc.index is not None:
            raise MatchSpecError(f"{exc.message} (from an expanded list)", None) from None
        raise


def text_test(
    modifiers: Sequence[str], values: Sequence[Any], lists: Mapping[str, Sequence[Any]]
) -> Callable[[str], bool] | None:
    """See :func:`detections.matchers.text_test`."""
    if any(n not in TEXT_WISE for n in modifiers) or any(v is None for v in values):
        return None
    try:
        spec = check_modifiers(modifiers)
        expanded, _ = _expand(spec, values, lists)
        if not expanded:
            return lambda t: False
        return spec.match.text_test(spec, expanded)
    except MatchSpecError:
        return None
