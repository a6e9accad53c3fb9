"""The registered stateful families, in the order the processor calls them (it decides the
order of their alerts, and of their changelog writes within a message).

Adding a family: its module in this package (a `pipeline.stateful.family.Family` subclass
over a pure detector of `detections.stateful`), and one line here.
"""

from __future__ import annotations

from typing import Any

from pipeline.stateful.anomaly import Anomaly
from pipeline.stateful.correlations import Correlations
from pipeline.stateful.family import Family
from pipeline.stateful.new_terms import NewTerms
from pipeline.stateful.silence import Silence

__all__ = ["FAMILIES", "META_KIND", "check_families"]

#: The changelog kind of the processor's own meta key (offsets and watermark), written last.
META_KIND = "m"

FAMILIES: tuple[type[Family[Any]], ...] = (
    Correlations,
    NewTerms,
    Anomaly,
    Silence,
)


def check_families(families: tuple[type[Family[Any]], ...]) -> dict[str, type[Family[Any]]]:
    """The families by changelog kind; raises ValueError when two families share a name, a
    kind letter (or take the meta key's) or a by-group field.

    >>> sorted(check_families(FAMILIES))
    ['a', 'c', 'h', 'n', 'p', 's']
    >>> check_families((Silence, Silence))
    Traceback (most recent call last):
    ValueError: two stateful families are named 'silence'
    """
    by_kind: dict[str, type[Family[Any]]] = {}
    names: set[str] = set()
    fields: set[str] = set()
    for family in families:
        if family.name in names:
            raise ValueError(f"two stateful families are named {family.name!r}")
        names.add(family.name)
        for kind in family.kinds:
            if kind == META_KIND or kind in by_kind or len(kind) != 1 or kind == "|":
                raise ValueError(f"changelog kind {kind!r} of {family.name!r} is taken or invalid")
            by_kind[kind] = family
        if family.rekey_field is not None:
            if family.rekey_field in fields or family.rekey_field == "v":
                raise ValueError(f"by-group field {family.rekey_field!r} is taken")
            fields.add(family.rekey_field)
    return by_kind
