"""``|exists`` and ``|fieldref``: comparisons about a field itself or another field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detections.fields import Cache, derived_source, resolve_alias
from detections.matchers import MatchSpecError, Predicate, Texts, cached_texts
from detections.modifiers.base import MatchType, Spec, Target


class Exists(MatchType):
    """``|exists: true/false``: whether the field has a non-null value."""

    cased = False
    text_wise = False

    def compile(self, target: Target, spec: Spec, values: Sequence[Any]) -> Predicate:
        if len(values) != 1 or not isinstance(values[0], bool):
            raise MatchSpecError("'exists' takes a single true or false")
        want = values[0]
        getter = target.leaves
        source = derived_source(target.path)

        def exists(event: dict[str, Any], cache: Cache) -> bool:
            return any(v is not None for v in getter(event, cache)) is want

        if source is None:
            return exists
        slot, derive = source
        if slot is None:

            def exists_derived_uncached(event: dict[str, Any], cache: Cache) -> bool:
                if derive(event).__class__ is str:  # a scalar text: it exists
                    return want
                return exists(event, cache)

            return exists_derived_uncached
        unset = object()

        def exists_derived(event: dict[str, Any], cache: Cache) -> bool:
            # The derived value read inline (most are a scalar text: it exists), computed at
            # most once per event like every derived field.
            root = cache.get(slot, unset)
            if root is unset:
                root = cache[slot] = derive(event)
            if root.__class__ is str:
                return want
            return exists(event, cache)

        return exists_derived


class FieldRef(MatchType):
    """``|fieldref``: the field shares a text with the named field(s)."""

    text_wise = False

    def compile(self, target: Target, spec: Spec, values: Sequence[Any]) -> Predicate:
        lower = not spec.cased
        others: list[Texts] = []
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v:
                raise MatchSpecError(f"'fieldref' needs a field name, got {v!r}", i)
            others.append(cached_texts(resolve_alias(v), lower))
        mine = cached_texts(target.path, lower)
        match_all = spec.match_all

        def pred(event: dict[str, Any], cache: Cache) -> bool:
            ts = set(mine(event, cache))
            checks = (bool(ts.intersection(other(event, cache))) for other in others)
            return all(checks) if match_all else any(checks)

        return pred
