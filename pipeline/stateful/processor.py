"""`StatefulProcessor`: every registered family over per-partition state, without Kafka.

The processor owns what all families share: one `PartitionState` per events partition (the
families' states by name, the last applied offset per input topic, the event-time
watermark), the changelog encoding (keys ``<partition>|<kind>|<key>``, JSON values, the
meta key ``<partition>|m|`` written last), the by-group message format (``{"v": 1,
<family field>: payload, ...}``), exactly-once application (`applied`) and the routing of
stateless matches to the families that consume their rule. The families
(`pipeline.stateful.registry.FAMILIES`) do the rest through the `Family` hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from detections.engine import Match
from detections.rule import RuleSet
from detections.stateful.errors import StatefulError
from detections.stateful.timeutil import event_time
from pipeline.stateful.family import Family, FamilyContext, Tick
from pipeline.stateful.options import StatefulOptions
from pipeline.stateful.registry import FAMILIES, META_KIND, check_families
from schemas.keys import cluster_of

__all__ = ["REKEY_VERSION", "PartitionState", "Rekeyed", "StatefulProcessor"]

log = logging.getLogger("klaxon.stateful")

#: Value of ``v`` in by-group (repartition) messages.
REKEY_VERSION = 1


@dataclass(frozen=True, slots=True)
class Rekeyed:
    """One message for the by-group topic: explicit partition, informative key, value."""

    partition: int
    key: bytes
    value: bytes


@dataclass
class PartitionState:
    """Everything the stateful detectors hold for one partition."""

    partition: int
    #: `Family.name` -> that family's state for this partition
    states: dict[str, Any]
    offsets: dict[str, int] = field(default_factory=dict)  # last applied offset per topic
    wm: float | None = None
    last_input: float = 0.0  # wall clock (caller's) of the last message
    meta_dirty: bool = False


_NEVER = float("-inf")


def _key(partition: int, kind: str, key: str = "") -> bytes:
    return f"{partition}|{kind}|{key}".encode()


def _overrides(family: Family[Any], hook: str) -> bool:
    return getattr(type(family), hook) is not getattr(Family, hook)


class StatefulProcessor:
    """All registered stateful families over per-partition state; see `pipeline.stateful`.

    ``families``: the family classes to run (default: `FAMILIES`), in call order.
    """

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        partitions: int,
        options: StatefulOptions | None = None,
        families: Sequence[type[Family[Any]]] | None = None,
    ) -> None:
        self.options = options or StatefulOptions()
        self.partitions = partitions
        self.parts: dict[int, PartitionState] = {}
        self.errors = 0  # detector exceptions (counted, logged once per kind)
        self.skipped_messages = 0  # read again after a crash, already in the state
        self._logged: set[str] = set()
        classes = tuple(FAMILIES if families is None else families)
        check_families(classes)
        ctx = FamilyContext(self.options, partitions, self._error)
        self.families: tuple[Family[Any], ...] = tuple(cls(ctx) for cls in classes)
        self._by_kind = {k: f for f in self.families for k in f.kinds}
        self._by_name = {f.name: f for f in self.families}
        active = [f for f in self.families if f.enabled]
        self._rekeying = [f for f in self.families if f.rekey_field is not None]
        self._on_events = [f for f in active if _overrides(f, "on_events")]
        self._on_rekeyed = [f for f in active if _overrides(f, "on_rekeyed")]
        self._on_tick = [f for f in active if _overrides(f, "on_tick")]
        self.set_rules(ruleset)

    def family(self, name: str) -> Family[Any]:
        """The registered family called ``name`` (KeyError if none)."""
        return self._by_name[name]

    def state(self, partition: int, name: str) -> Any:
        """Family ``name``'s state for ``partition`` (KeyError if it is not held)."""
        return self.parts[partition].states[name]

    # -- rules -------------------------------------------------------------------------------

    def set_rules(self, ruleset: RuleSet) -> None:
        """Use a (reloaded) rule set; partition states are kept, keys of removed detectors
        are deleted (and written as deletions)."""
        self.ruleset = ruleset
        held: set[str] = set()
        published: set[str] = set()
        routes: dict[str, list[Family[Any]]] = {}
        for family in self.families:
            family.set_rules(ruleset)
            held |= family.rules_held_back()
            published |= family.rules_published()
            if family.enabled:
                for rule_id in family.rule_ids():
                    routes.setdefault(rule_id, []).append(family)
        self.suppressed = frozenset(held - published)
        self._routes = {rule_id: tuple(fams) for rule_id, fams in routes.items()}
        for part in self.parts.values():
            part.states = {f.name: f.rebuild(part.states[f.name]) for f in self.families}

    def suppress(self, matches: Iterable[Match]) -> list[Match]:
        """The matches that become alerts on their own (base rules of correlations and
        new terms detectors are left out, unless a correlation says ``generate: true``)."""
        suppressed = self.suppressed
        return [m for m in matches if m.rule.id not in suppressed]

    # -- partitions --------------------------------------------------------------------------

    def new_partition(self, partition: int, now: float = 0.0) -> PartitionState:
        """An empty state for ``partition`` (replacing any held one); ``now``: wall clock."""
        states = {f.name: f.new_state(now) for f in self.families}
        part = PartitionState(partition, states, last_input=now)
        self.parts[partition] = part
        return part

    def load(
        self, partition: int, items: Iterable[tuple[bytes, bytes | None]], now: float = 0.0
    ) -> int:
        """Rebuild ``partition`` from changelog pairs (other partitions' keys are ignored);
        returns how many keys were used. Unreadable values are skipped and logged."""
        part = self.new_partition(partition, now)
        states = part.states
        prefix = f"{partition}|".encode()
        by_kind = self._by_kind
        used = 0
        for raw_key, raw in items:
            if raw is None or not raw_key.startswith(prefix):
                continue
            _, kind, key = raw_key.decode().split("|", 2)
            family = by_kind.get(kind)
            if family is None and kind != META_KIND:
                continue
            try:
                value = orjson.loads(raw)
                if family is not None:
                    family.load(states[family.name], kind, key, value)
                else:
                    part.offsets = {str(k): int(v) for k, v in value["offsets"].items()}
                    part.wm = None if value.get("wm") is None else float(value["wm"])
            except (StatefulError, ValueError, KeyError, TypeError) as exc:
                self._error("load", exc)
                continue
            used += 1
        part.states = {f.name: f.loaded(states[f.name]) for f in self.families}
        return used

    def drop(self, partition: int) -> None:
        """Forget a partition (revoked: its next owner rebuilds it from the changelog)."""
        self.parts.pop(partition, None)

    def applied(self, partition: int, topic: str, offset: int | None) -> bool:
        """Whether the message at ``offset`` of ``topic`` is already in the partition's state."""
        part = self.parts.get(partition)
        if part is None or offset is None:
            return False
        return offset <= part.offsets.get(topic, -1)

    def _enter(
        self, partition: int, topic: str, offset: int | None, now: float, skip: bool | None
    ) -> PartitionState | None:
        """The partition's state for an incoming message (marked as just heard from), or
        None when the message is already in it (``skip``, by default `applied`) and is dropped.
        """
        if skip is None:
            skip = self.applied(partition, topic, offset)
        part = self.parts.get(partition) or self.new_partition(partition, now)
        part.last_input = now
        if skip:
            self.skipped_messages += 1
            return None
        return part

    def _error(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        if what not in self._logged:
            self._logged.add(what)
            log.error("stateful %s failed (counted, logged once): %r", what, exc)

    # -- input -------------------------------------------------------------------------------

    def process(
        self,
        events: Sequence[dict[str, Any]],
        matches: Sequence[Match],
        partition: int,
        *,
        topic: str,
        offset: int | None,
        now: float = 0.0,
        skip: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Feed one events message; returns stateful alerts. Never raises on input.

        ``skip`` (default: `applied`) leaves the state alone for a message already in it.
        ``now`` is the caller's wall clock (only used for idle watermarks).
        """
        part = self._enter(partition, topic, offset, now, skip)
        if part is None:
            return []
        alerts: list[dict[str, Any]] = []
        times = [event_time(event) for event in events]
        newest: dict[str, float] = {}  # per cluster
        newest_get = newest.get
        for event, t in zip(events, times, strict=True):
            if t is not None and t > newest_get(c := cluster_of(event), _NEVER):
                newest[c] = t
        if newest:
            t = max(newest.values())
            if part.wm is None or t > part.wm:
                part.wm = t
        states = part.states
        for family in self._on_events:
            family.on_events(states[family.name], events, times, newest, alerts)
        routes = self._routes
        for match in matches:
            targets = routes.get(match.rule.id)
            if targets:
                for family in targets:
                    family.on_match(states[family.name], match, alerts)
        if offset is not None:
            part.offsets[topic] = offset
            part.meta_dirty = True
        return alerts

    def take_rekeyed(self, partition: int) -> list[Rekeyed]:
        """By-group messages produced by ``partition`` since the last call (one per target
        partition), to be delivered before the partition's `changes` are written."""
        part = self.parts.get(partition)
        if part is None:
            return []
        boxes = [(f, f.take_rekeyed(part.states[f.name])) for f in self._rekeying]
        dests = sorted({dest for _, box in boxes for dest in box})
        out = []
        for dest in dests:
            value: dict[str, Any] = {"v": REKEY_VERSION}
            key: str | None = None
            for family, box in boxes:
                payload = box.get(dest)
                if payload:
                    key = family.rekey_key(payload) if key is None else key
                else:
                    payload = family.rekey_empty
                value[str(family.rekey_field)] = payload
            out.append(Rekeyed(dest, str(key).encode(), orjson.dumps(value)))
        return out

    def process_rekeyed(
        self,
        value: bytes | None,
        partition: int,
        *,
        topic: str,
        offset: int | None,
        now: float = 0.0,
        skip: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Feed one by-group message (each family gets its field)."""
        part = self._enter(partition, topic, offset, now, skip)
        if part is None:
            return []
        alerts: list[dict[str, Any]] = []
        try:
            doc = orjson.loads(value or b"")
            if not isinstance(doc, dict) or doc.get("v") != REKEY_VERSION:
                raise ValueError(f"unsupported by-group message {str(doc)[:80]}")
        except ValueError as exc:
            self._error("by-group message", exc)
            doc = {}
        for family in self._on_rekeyed:
            t = family.on_rekeyed(part.states[family.name], doc.get(family.rekey_field), alerts)
            if t is not None and (part.wm is None or t > part.wm):
                part.wm = t
        if offset is not None:
            part.offsets[topic] = offset
            part.meta_dirty = True
        return alerts

    # -- timer -------------------------------------------------------------------------------

    def watermark(self, partition: int, now: float) -> float | None:
        """The partition's event-time watermark at wall time ``now`` (see `pipeline.stateful`)."""
        part = self.parts.get(partition)
        if part is None or part.wm is None:
            return None
        idle = now - part.last_input - self.options.idle_grace
        return part.wm + idle if idle > 0 else part.wm

    def tick(self, partition: int, now: float) -> list[dict[str, Any]]:
        """Let every family judge what the partition's watermark passed (closed windows,
        quiet clusters, expired terms); ``now``: the caller's wall clock."""
        part = self.parts.get(partition)
        wm = self.watermark(partition, now)
        if part is None or wm is None:
            return []
        alerts: list[dict[str, Any]] = []
        tick = Tick(now, wm, wm - self.options.advance_delay)
        for family in self._on_tick:
            family.on_tick(part.states[family.name], tick, alerts)
        return alerts

    # -- output ------------------------------------------------------------------------------

    def changes(self, partition: int, now: float | None = None) -> list[tuple[bytes, bytes | None]]:
        """Changelog writes for everything changed since the last call: ``(key, JSON value)``,
        ``None`` deletes the key; the meta key comes last. ``now`` (the caller's wall clock)
        lets families checkpoint some changes periodically (None: everything now)."""
        part = self.parts.get(partition)
        if part is None:
            return []
        out: list[tuple[bytes, bytes | None]] = []
        for family in self.families:
            for kind, key, value in family.dump(part.states[family.name], now):
                out.append(
                    (_key(partition, kind, key), None if value is None else orjson.dumps(value))
                )
        if part.meta_dirty or out:
            meta = {"offsets": part.offsets, "wm": part.wm}
            out.append((_key(partition, META_KIND), orjson.dumps(meta)))
            part.meta_dirty = False
        return out
