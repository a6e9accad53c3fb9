"""``|expand``: ``%name%`` placeholders replaced by the values of named lists."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from detections.errors import suggest
from detections.matchers import MatchSpecError
from detections.modifiers.base import Transform


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


class Expand(Transform):
    """``|expand``: each value names lists (``%admins%``); every other modifier sees their
    items."""

    def apply(
        self, values: Sequence[Any], lists: Mapping[str, Sequence[Any]]
    ) -> list[tuple[int, list[Any]]]:
        out = []
        for i, v in enumerate(values):
            if not isinstance(v, str):
                raise MatchSpecError(
                    f"'expand' needs a string with %name% placeholders, got {v!r}", i
                )
            if "%" not in v:
                raise MatchSpecError("'expand' value has no %name% placeholder", i)
            expanded, unknown = expand_placeholders(v, lists)
            if unknown is not None:
                raise MatchSpecError(f"unknown list '{unknown}'", i, suggest(unknown, list(lists)))
            out.append((i, expanded))
        return out
