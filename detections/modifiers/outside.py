"""``|outside``: some value of the field matches none of the rule's values.

Sigma compares a field that holds many values (``sourceIPs``, every container image) with
"any value matches"; ``not`` of that is "no value matches". Allow-lists need the third form,
"some value is not allowed": a request whose ``sourceIPs`` chain holds one address outside the
cluster's networks, a pod with one image from an unlisted registry.

Like every comparison over an ``|expand`` of an empty list, ``|outside`` of an empty list
matches no event: an allow-list that is not filled in yet restricts nothing. Rules use that
on purpose (``cluster_networks``, the policy lists), and ``klaxon rules validate`` says which
lists are empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from detections.matchers import Predicate
from detections.modifiers.base import Flag, MatchType, Target

#: Match types without a per-value test, with which "outside" means nothing.
_WHOLE_FIELD = ("exists", "fieldref", "gt", "gte", "lt", "lte")


class Outside(Flag):
    """``|outside``: some string value of the field fails the comparison."""

    text_wise = False  # true for a text the comparison rejects: never a guard

    def check(self, match: MatchType, names: Sequence[str]) -> str | None:
        if match.name in _WHOLE_FIELD:
            return f"'outside' cannot be combined with '{match.name}'"
        if "all" in names:
            return "'outside' cannot be combined with 'all'"
        return None


def outside(target: Target, test: Callable[[str], bool]) -> Predicate:
    """The predicate: some string leaf of ``target`` fails ``test`` (an unparsable address
    fails ``|cidr``, so it counts as outside).

    >>> from detections.fields import compile_path
    >>> get = compile_path("sourceIPs")
    >>> pred = outside(Target("sourceIPs", get, get), lambda t: t.startswith("10."))
    >>> pred({"sourceIPs": ["10.0.0.1"]}, {}), pred({"sourceIPs": ["1.2.3.4", "10.0.0.1"]}, {})
    (False, True)
    >>> pred({}, {})
    False
    """
    leaves = target.leaves

    def pred(event: dict[str, Any], cache: Any) -> bool:
        return any(isinstance(v, str) and not test(v) for v in leaves(event, cache))

    return pred
