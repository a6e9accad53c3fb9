"""An alert's ATT&CK block resolved against the pinned catalogue (`mitre/`), for the formats.

The alert carries tactic ids and technique ids with names; SIEM formats also want tactic
names, reference URLs, the parent of a sub-technique and the ATT&CK version. Ids the catalogue
lacks are kept with what the alert says (a format never drops a mapping).

>>> [m.technique.id for m in mappings({"attack": {"tactics": ["TA0003"],
...     "techniques": [{"id": "T1098.006", "name": "Additional Container Cluster Roles"}]}})]
['T1098']
>>> m = mappings({"attack": {"tactics": ["TA0003"], "techniques": [
...     {"id": "T1098.006", "name": "Additional Container Cluster Roles"}]}})[0]
>>> m.sub_technique.id, [t.name for t in m.tactics], ATTACK_VERSION
('T1098.006', ['Persistence'], '18.1')
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mitre import catalogue
from mitre.errors import MitreError

__all__ = ["ATTACK_VERSION", "Mapping", "Ref", "mappings"]

#: The ATT&CK version of the bundled catalogue, written on every mapping.
ATTACK_VERSION = catalogue().version


@dataclass(frozen=True, slots=True)
class Ref:
    """A tactic or technique: id, name and its attack.mitre.org page (empty when unknown)."""

    id: str
    name: str
    url: str = ""


@dataclass(frozen=True, slots=True)
class Mapping:
    """One technique (with its sub-technique, if the rule names one) and its tactics."""

    technique: Ref | None
    sub_technique: Ref | None
    tactics: tuple[Ref, ...]


def _tactic(tid: str) -> Ref:
    try:
        t = catalogue().tactic(tid)
    except MitreError:
        return Ref(tid, tid)
    return Ref(t.id, t.name, t.url)


def _technique(tid: str, name: str) -> tuple[Ref, tuple[str, ...]]:
    """The technique's ref and its tactic shortnames (none if the catalogue lacks it)."""
    try:
        t = catalogue().technique(tid)
    except MitreError:
        return Ref(tid, name), ()
    return Ref(t.id, t.name, t.url), t.tactics


def mappings(alert: dict[str, Any]) -> list[Mapping]:
    """One `Mapping` per technique of the alert; per tactic when it names no technique."""
    block = alert.get("attack")
    attack: dict[str, Any] = block if isinstance(block, dict) else {}
    tactics = tuple(str(t) for t in attack.get("tactics") or [])
    techniques = tuple(
        (str(e.get("id")), str(e.get("name") or ""))
        for e in attack.get("techniques") or []
        if isinstance(e, dict)
    )
    return list(_mappings(tactics, techniques))


@lru_cache(maxsize=4096)  # a rule's mapping is the same on each of its alerts
def _mappings(
    tactic_ids: tuple[str, ...], techniques: tuple[tuple[str, str], ...]
) -> tuple[Mapping, ...]:
    listed = [_tactic(t) for t in tactic_ids]
    out: list[Mapping] = []
    for tid, name in techniques:
        ref, shortnames = _technique(tid, name)
        ids = {catalogue().tactic(s).id for s in shortnames}
        tactics = tuple(t for t in listed if t.id in ids) or tuple(listed)
        if "." in ref.id:
            parent, _ = _technique(ref.id.split(".", 1)[0], "")
            out.append(Mapping(parent, ref, tactics))
        else:
            out.append(Mapping(ref, None, tactics))
    if not out:
        out = [Mapping(None, None, (t,)) for t in listed]
    return tuple(out)
