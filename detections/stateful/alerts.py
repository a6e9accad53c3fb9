"""Alerts from stateful detectors, in the same ``klaxon.alert/v1`` shape as stateless ones.

A stateful detector is described by a :class:`Detector`; :func:`make_alert` reuses
:func:`detections.alert.to_alert` for the shared fields (user, object, ATT&CK block from the
tags) taken from a *context event* (the event that completed the window, introduced the new
term or closed the anomalous window), then sets the deterministic id, the summary, the window
end as ``event_time`` and ``evidence`` (``detector`` names the family: ``correlation``,
``new_terms``, ``anomaly`` or ``silence``).

>>> d = Detector("0d6c3bd6-3f7e-4c0e-a1f0-8c2b9d1e7a10", "Forbidden burst", "correlation", "high")
>>> ctx = {"cluster": "c1", "stage": "ResponseComplete"}
>>> a = make_alert(d, stable_id(d.id, "k", "e1"), "x", ctx, {"count": 3}, 0.0)
>>> a["rule"]["title"], a["evidence"], a["event_time"], a["cluster"]
('Forbidden burst', {'detector': 'correlation', 'count': 3}, '1970-01-01T00:00:00.000000Z', 'c1')
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from detections.alert import KLAXON_NS, to_alert
from detections.condition import Ref
from detections.engine import Match
from detections.rule import KlaxonBlock, Rule
from detections.stateful.timeutil import iso

#: Alerts need a stage; alerts about no single request (a quiet cluster) use this one.
NO_STAGE = "ResponseComplete"


@dataclass(frozen=True, slots=True)
class Detector:
    """What an alert names as its ``rule``: a correlation, new terms, anomaly or silence check."""

    id: str
    title: str
    kind: str
    level: str = "medium"
    tags: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    author: str = "Klaxon"
    mtmk: tuple[str, ...] = ()
    falsepositives: tuple[str, ...] = ()

    def as_rule(self) -> Rule:
        """A stand-in :class:`Rule` so the shared alert builder can fill the common fields."""
        return Rule(
            title=self.title,
            id=self.id,
            detection={},
            condition=Ref("stateful"),
            condition_text="stateful",
            file=self.source,
            description=self.description,
            author=self.author,
            tags=self.tags,
            level=self.level,
            falsepositives=self.falsepositives,
            klaxon=KlaxonBlock(mtmk=self.mtmk),
            source=self.source,
            status="experimental",
            license="Apache-2.0",
        )


def stable_id(*parts: str) -> str:
    """Deterministic alert id: uuid5 in Klaxon's namespace over ``|``-joined parts.

    >>> stable_id("a", "b") == stable_id("a", "b") != stable_id("a", "c")
    True
    """
    return str(uuid.uuid5(KLAXON_NS, "|".join(parts)))


def make_alert(
    detector: Detector,
    alert_id: str,
    summary: str,
    context: dict[str, Any],
    evidence: dict[str, Any],
    at: float,
) -> dict[str, Any]:
    """A ``schemas.Alert``-shaped dict (pure: same inputs, same dict)."""
    if not context.get("stage"):
        context = {**context, "stage": NO_STAGE}
    alert = to_alert(Match(detector.as_rule(), context, {}))
    alert["id"] = alert_id
    alert["summary"] = summary
    alert["event_time"] = iso(at)
    alert["evidence"] = {"detector": detector.kind, **evidence}
    del alert["group"]  # a stateful alert is already an aggregate (detections.grouping)
    return alert
