"""`pipeline.stateful.family`: a family registered with one line is driven by the processor
(events, matches, by-group messages, the timer, the changelog round trip)."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from detections import Engine, load_rules
from detections.engine import Match
from detections.rule import RuleSet
from detections.stateful.timeutil import iso
from pipeline.stateful import FAMILIES, Family, StatefulOptions, StatefulProcessor, Tick
from pipeline.stateful.family import Alerts, Dumped

T0 = 1795770000.0  # 2026-11-27T08:20:00Z


@dataclass
class TallyState:
    counts: dict[str, int] = field(default_factory=dict)  # cluster -> events
    matched: int = 0
    dirty: set[str] = field(default_factory=set)
    outbox: dict[int, list[str]] = field(default_factory=dict)
    echoes: int = 0
    reported: set[str] = field(default_factory=set)


class Tally(Family[TallyState]):
    """A toy family: counts events per cluster, matches of one rule, by-group echoes, and
    alerts once per cluster from the timer when it has seen ``LIMIT`` events."""

    name = "tally"
    kinds: ClassVar[Mapping[str, str]] = {"t": "events per cluster"}
    rekey_field = "tally"
    rekey_empty: ClassVar[list[str]] = []
    LIMIT = 3

    def set_rules(self, ruleset: RuleSet) -> None:
        self.watched = frozenset(r.id for r in ruleset.rules if r.name == "refused")

    def rule_ids(self) -> Collection[str]:
        return self.watched

    def new_state(self, now: float) -> TallyState:
        return TallyState()

    def dump(self, state: TallyState, now: float | None) -> Iterator[Dumped]:
        for cluster in sorted(state.dirty):
            yield "t", cluster, state.counts.get(cluster)
        state.dirty = set()

    def load(self, state: TallyState, kind: str, key: str, value: Any) -> None:
        state.counts[key] = int(value)

    def on_events(
        self,
        state: TallyState,
        events: Sequence[dict[str, Any]],
        times: Sequence[float | None],
        newest: dict[str, float],
        alerts: Alerts,
    ) -> None:
        for event in events:
            cluster = event["cluster"]
            state.counts[cluster] = state.counts.get(cluster, 0) + 1
            state.dirty.add(cluster)
        for cluster in newest:
            state.outbox.setdefault(self.ctx.owner(cluster), []).append(cluster)

    def on_match(self, state: TallyState, match: Match, alerts: Alerts) -> None:
        state.matched += 1

    def take_rekeyed(self, state: TallyState) -> dict[int, Any]:
        out, state.outbox = state.outbox, {}
        return out

    def on_rekeyed(self, state: TallyState, payload: Any, alerts: Alerts) -> float | None:
        state.echoes += len(payload or [])
        return None

    def on_tick(self, state: TallyState, tick: Tick, alerts: Alerts) -> None:
        for cluster, n in sorted(state.counts.items()):
            if n >= self.LIMIT and cluster not in state.reported:
                state.reported.add(cluster)
                alerts.append({"id": f"tally-{cluster}", "at": tick.wm})


RULES = """
title: Refused
id: 6f1c2d44-5b1e-4c1a-9d3e-2b7a8c9d0e1f
name: refused
detection: {selection: {responseStatus.code: 403}, condition: selection}
"""
ONLY_TALLY = StatefulOptions(correlations=False, new_terms=False, anomaly=False, silence=False)


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    return load_rules([], texts={"r.yml": RULES})


def event(i: int, code: int = 403) -> dict[str, Any]:
    return {
        "auditID": f"e{i}",
        "cluster": "prod",
        "user": {"username": "eve"},
        "verb": "get",
        "responseStatus": {"code": code},
        "requestReceivedTimestamp": iso(T0 + i),
    }


def test_a_registered_family_is_driven_by_the_processor(ruleset: RuleSet) -> None:
    """Events, its rule's matches, the timer, its by-group field, the meta key last."""
    proc = StatefulProcessor(ruleset, partitions=1, options=ONLY_TALLY, families=(*FAMILIES, Tally))
    events = [event(0), event(1, code=200), event(2)]
    matches = Engine(ruleset).evaluate_batch(events)
    assert proc.process(events, matches, 0, topic="ev", offset=7, now=0.0) == []
    state = proc.state(0, "tally")
    assert (state.counts, state.matched) == ({"prod": 3}, 2)
    assert proc.tick(0, now=1.0) == [{"id": "tally-prod", "at": T0 + 2}]
    assert proc.tick(0, now=2.0) == []
    changes = proc.changes(0)
    assert [k for k, _ in changes] == [b"0|t|prod", b"0|m|"]
    assert changes[0][1] == b"3"
    (rec,) = proc.take_rekeyed(0)
    assert rec.key == b"tally"
    assert rec.value == b'{"v":1,"matches":[],"heartbeats":{},"tally":["prod"]}'
    proc.process_rekeyed(rec.value, rec.partition, topic="bg", offset=0)
    assert state.echoes == 1


def test_a_registered_family_survives_a_changelog_round_trip(ruleset: RuleSet) -> None:
    """Its pairs load back into its state (and only its kinds reach it); a message already
    applied is not counted again."""
    families = (*FAMILIES, Tally)
    first = StatefulProcessor(ruleset, partitions=2, options=ONLY_TALLY, families=families)
    first.process([event(0), event(1)], [], 1, topic="ev", offset=3)
    log = dict(first.changes(1))
    second = StatefulProcessor(ruleset, partitions=2, options=ONLY_TALLY, families=families)
    assert second.load(1, log.items()) == 2  # the tally key and the meta key
    assert second.state(1, "tally").counts == {"prod": 2}
    assert second.process([event(0)], [], 1, topic="ev", offset=3) == []
    assert second.state(1, "tally").counts == {"prod": 2}
    assert second.skipped_messages == 1
    # without the family registered, its keys are ignored, the rest still loads
    plain = StatefulProcessor(ruleset, partitions=2, options=ONLY_TALLY)
    assert plain.load(1, log.items()) == 1
    assert plain.applied(1, "ev", 3)


def test_a_switched_off_family_keeps_its_state_but_gets_no_input(ruleset: RuleSet) -> None:
    """`Family.is_enabled` false: no events, matches or ticks; dump and load still run."""

    class Off(Tally):
        @classmethod
        def is_enabled(cls, options: StatefulOptions) -> bool:
            return False

    proc = StatefulProcessor(ruleset, partitions=1, options=ONLY_TALLY, families=(Off,))
    proc.load(0, [(b"0|t|prod", b"5")])
    proc.process([event(0)], Engine(ruleset).evaluate_batch([event(0)]), 0, topic="ev", offset=0)
    assert proc.tick(0, now=1.0) == []
    assert (proc.state(0, "tally").counts, proc.state(0, "tally").matched) == ({"prod": 5}, 0)


def test_families_with_the_same_kind_or_name_are_refused(ruleset: RuleSet) -> None:
    """Kind letters (and the meta key's) and names are unique across the registry."""

    class Clash(Tally):
        name = "clash"
        kinds: ClassVar[Mapping[str, str]] = {"c": "correlation group, again"}

    class Meta(Tally):
        name = "meta"
        kinds: ClassVar[Mapping[str, str]] = {"m": "the meta key's letter"}

    for bad in ((*FAMILIES, Clash), (Meta,), (Tally, Tally)):
        with pytest.raises(ValueError, match=r"taken|named"):
            StatefulProcessor(ruleset, partitions=1, families=bad)
