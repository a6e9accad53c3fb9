"""Stateful detections in the detect step, without Kafka (pure core; the Faust shell is
`pipeline.tables`).

`StatefulProcessor` is called once per events message with the message's events and the
stateless `Match`es the engine found in them. It feeds correlation base-rule matches to the
correlations (`detections.stateful.correlation`), matches to the first-seen detectors
(`detections.stateful.newterms`) and every event to the per-principal anomaly model
(`detections.stateful.anomaly`), and returns their alerts (the `detections.alert.to_alert`
shape). Silent-sink checks (`detections.stateful.silence`) run on heartbeats. With an
offline model (`StatefulOptions.offline_model`, ``KLAXON_ANOMALY_MODEL``) the feature rows
of all per-principal windows closed by one message (or one `tick`) are scored by it in one
batch call (`detections.stateful.offline.score_windows`), never one row at a time.

State is kept **per partition** of the events topic (`PartitionState`) in plain dicts, and
every change is listed by `StatefulProcessor.changes` as ``(key, JSON value or None)`` pairs
that the shell writes to the changelog partition of the same number, after the message's
alerts. `StatefulProcessor.load` rebuilds a partition from those pairs after a restart or a
rebalance. Keys are ``<partition>|<kind>|<detector key>`` with kinds ``c`` (correlation
group), ``n`` (first-seen group or learning start), ``a`` (principal), ``h`` (the partition's
HalfSpaceTrees), ``s`` (silence per cluster) and ``m`` (meta: last applied offset per input
topic and the event-time watermark).

Exactly-once state over at-least-once input: the meta key records the last offset applied
per input topic and is written after the states of its message, in the same changelog
partition (so if the meta arrived, so did the states). A message that is read again after a
crash with an offset not above the recorded one is not applied twice (`applied`); its
stateless alerts are still produced (same ids).

Co-partitioning: the events topic is keyed by ``cluster|user.username``, so a correlation
whose ``group-by`` contains ``user.username`` sees all of a group's events in one partition.
Any other correlation (e.g. refused requests per source IP) is *re-keyed*: its observations
are sent (`take_rekeyed`) to the ``<events>.by-group`` topic, partitioned by the group key,
and counted there (`process_rekeyed`). First-seen detectors whose group or term includes
``user.username`` are exact per partition (all shipped ones); others are judged per
partition (each partition learns its own terms). Silence needs every partition's view of a
cluster: each partition sends a heartbeat per cluster (at most every ``heartbeat_every``
event-time seconds) to the by-group partition of ``#silence|<cluster>``, which owns that
cluster's silence state.

Watermarks (`tick`, from a timer): a partition's watermark is the largest event time it has
seen (both topics); after ``idle_grace`` wall seconds without any input it follows the wall
clock, so the windows of the last burst before a lull and a cluster that went quiet are
judged even when nothing else arrives. Silent clusters are reported against it; correlation
windows are advanced, anomaly windows closed and expired terms pruned ``advance_delay``
seconds behind it, because events reach a partition only roughly in time order (raw
messages from several raw partitions interleave; a group's own events still decide its
sliding windows at once).

>>> from detections import Engine, load_rules
>>> rs = load_rules()
>>> proc = StatefulProcessor(rs, partitions=1, options=StatefulOptions(anomaly=False))
>>> rbac = {"auditID": "a1", "stage": "ResponseComplete", "verb": "create", "cluster": "c",
...         "user": {"username": "mallory"}, "responseStatus": {"code": 201},
...         "objectRef": {"resource": "clusterrolebindings", "apiGroup":
...                       "rbac.authorization.k8s.io", "name": "x"},
...         "requestReceivedTimestamp": "2026-11-27T09:00:00Z"}
>>> pod = {**rbac, "auditID": "a2", "objectRef": {"resource": "deployments", "apiGroup": "apps",
...        "namespace": "default", "name": "miner"},
...        "requestReceivedTimestamp": "2026-11-27T09:01:00Z"}
>>> events = [rbac, pod]
>>> alerts = proc.process(events, Engine(rs).evaluate_batch(events), 0, topic="ev", offset=0)
>>> [a["rule"]["title"] for a in alerts]
['RBAC change followed by a workload write by the same identity']
>>> proc.applied(0, "ev", 0), proc.applied(0, "ev", 1)
(True, False)
>>> sorted({k.split(b"|")[1] for k, _ in proc.changes(0)})
[b'c', b'm']
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from detections.engine import Match
from detections.fields import resolve_alias
from detections.rule import RuleSet
from detections.stateful import (
    AnomalyModel,
    AnomalySettings,
    CorrelationEngine,
    NewTermsEngine,
    NewTermsSpec,
    load_new_terms,
    silence,
    suppressed_rule_ids,
)
from detections.stateful import Settings as CorrelationSettings
from detections.stateful import correlation as corr
from detections.stateful import newterms as nt
from detections.stateful.anomaly import PrincipalState, hst_from_json, hst_to_json
from detections.stateful.errors import StatefulError
from detections.stateful.offline import IsolationModel, RecordingAnomalyModel, score_windows
from detections.stateful.timeutil import event_time
from pipeline.config import Settings, check_model
from pipeline.routing import partition_for
from schemas.keys import cluster_of, principal_key

__all__ = [
    "PartitionState",
    "Rekeyed",
    "StatefulOptions",
    "StatefulProcessor",
    "TrackedStore",
    "co_partitioned",
    "options_from_settings",
    "packaged_new_terms",
]

log = logging.getLogger("klaxon.stateful")

#: Value of ``v`` in by-group (repartition) messages.
REKEY_VERSION = 1
#: The routing field of the events topic (besides the cluster).
PRINCIPAL_FIELD = "user.username"
_SILENCE = "#silence|"


@dataclass(frozen=True)
class StatefulOptions:
    """Which stateful detectors run, and the pipeline-side knobs (times in seconds)."""

    correlations: bool = True
    new_terms: bool = True
    anomaly: bool = True
    silence: bool = True
    #: A cluster with no event for this long (event time) is reported quiet.
    silence_threshold: float = 600.0
    #: Event-time seconds between two heartbeats of one cluster from one partition.
    heartbeat_every: float = 30.0
    #: Wall seconds without input after which a partition's watermark follows the wall clock.
    idle_grace: float = 60.0
    #: The timer judges correlation and anomaly windows this far behind the watermark: a
    #: partition's events are only roughly in time order (raw messages of several raw
    #: partitions interleave), and judging a group at the partition's newest time would make
    #: its own slightly older events late.
    advance_delay: float = 120.0
    #: Wall seconds between two checkpoints of principals whose only change is their open
    #: window's counts (a closed window, i.e. a baseline change, is written at once). 0, the
    #: default, writes them with every message, like every other family's state: a crash then
    #: loses nothing. A larger value writes less but a crash loses up to this much of the open
    #: windows' counts (the events are not read again), and with them anomaly alerts.
    anomaly_checkpoint_every: float = 0.0
    #: Wall seconds between prunes of expired first-seen terms.
    prune_every: float = 60.0
    #: Wall seconds between two checkpoints of a partition's HalfSpaceTrees after it learnt a
    #: window; 0 (default): with the message or tick that changed it (exact, as above).
    hst_checkpoint_every: float = 0.0
    correlation: CorrelationSettings = field(default_factory=CorrelationSettings)
    anomaly_settings: AnomalySettings = field(default_factory=AnomalySettings)
    #: The offline IsolationForest (`klaxon anomaly train`): scores every closed
    #: per-principal window, all windows closed by one message or tick in one batch. It
    #: needs the online model's windows, which are kept even when ``anomaly`` is off.
    offline_model: IsolationModel | None = field(default=None, compare=False, repr=False)

    @property
    def windows(self) -> bool:
        """Whether per-principal windows are kept (for the online or the offline model)."""
        return self.anomaly or self.offline_model is not None


def options_from_settings(settings: Settings) -> StatefulOptions:
    """The worker's options from its `Settings` (``KLAXON_*`` variables; loads the model).

    >>> o = options_from_settings(Settings(stateful_detectors=("anomaly",), idle_grace=5.0))
    >>> o.correlations, o.anomaly, o.idle_grace, o.anomaly_settings.threshold
    (False, True, 5.0, 6.0)
    """
    families = set(settings.stateful_detectors)
    model = None if settings.anomaly_model is None else check_model(settings.anomaly_model)
    return StatefulOptions(
        correlations="correlations" in families,
        new_terms="new-terms" in families,
        anomaly="anomaly" in families,
        silence="silence" in families,
        silence_threshold=settings.silence_threshold,
        idle_grace=settings.idle_grace,
        advance_delay=settings.advance_delay,
        correlation=CorrelationSettings(lateness=settings.correlation_lateness),
        anomaly_settings=AnomalySettings(threshold=settings.anomaly_threshold),
        offline_model=model,
    )


def co_partitioned(group_by: Sequence[str]) -> bool:
    """Whether a group (always per cluster) lies within one ``cluster|user`` partition.

    >>> co_partitioned(["user.username"]), co_partitioned(["sourceIP"]), co_partitioned([])
    (True, False, False)
    """
    return PRINCIPAL_FIELD in {resolve_alias(f) for f in group_by}


def packaged_new_terms(ruleset: RuleSet) -> tuple[NewTermsSpec, ...]:
    """The packaged first-seen detectors whose base rules all exist in ``ruleset``.

    A custom rule set without the base rules simply has no first-seen detectors.

    >>> from detections.loader import load_rules
    >>> len(packaged_new_terms(load_rules())) > 0, packaged_new_terms(load_rules([], texts={}))
    (True, ())
    """
    return tuple(s for s in load_new_terms() if all(ruleset.find(r) is not None for r in s.rules))


class TrackedStore(MutableMapping[str, Any]):
    """A dict that remembers which keys were set or deleted since `take_dirty`.

    The stateful engines update their states in place and then store them again, so every
    store counts as a change.

    >>> s = TrackedStore({"a": 1})
    >>> s["b"] = 2; del s["a"]
    >>> sorted(s.take_dirty()), s.take_dirty(), dict(s)
    (['a', 'b'], set(), {'b': 2})
    """

    def __init__(self, data: Iterable[tuple[str, Any]] = ()) -> None:
        self.data: dict[str, Any] = dict(data)
        self.dirty: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.dirty.add(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: str, default: Any = None) -> Any:
        """``dict.get`` without the ABC's try/except (hot path)."""
        return self.data.get(key, default)

    def take_dirty(self) -> set[str]:
        """The keys changed since the last call (and forget them)."""
        out, self.dirty = self.dirty, set()
        return out


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
    correlations: CorrelationEngine
    new_terms: NewTermsEngine
    anomaly: AnomalyModel
    silence: dict[str, Any] = field(default_factory=dict)
    silence_dirty: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)  # principals to write at the next changes()
    lazy: set[str] = field(default_factory=set)  # principals whose open window changed
    lazy_at: float = 0.0  # wall clock of the last write of the lazy principals
    offsets: dict[str, int] = field(default_factory=dict)
    wm: float | None = None
    last_input: float = 0.0  # wall clock (caller's) of the last message
    heartbeats: dict[str, float] = field(default_factory=dict)  # cluster -> last sent (memory)
    rekeyed: dict[int, list[Any]] = field(default_factory=dict)  # partition -> items
    rekey_beats: dict[int, dict[str, float]] = field(default_factory=dict)
    meta_dirty: bool = False
    hst_dirty: bool = False
    hst_saved: int = 0  # windows_scored at the last HST checkpoint
    hst_saved_at: float = 0.0
    pruned_at: float = 0.0


def _key(partition: int, kind: str, key: str = "") -> bytes:
    return f"{partition}|{kind}|{key}".encode()


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


class StatefulProcessor:
    """All stateful detectors over per-partition state; see the module docstring."""

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        partitions: int,
        options: StatefulOptions | None = None,
        new_terms: Sequence[NewTermsSpec] | None = None,
    ) -> None:
        self.options = options or StatefulOptions()
        self.partitions = partitions
        self.parts: dict[int, PartitionState] = {}
        self.errors = 0  # detector exceptions (counted, logged once per kind)
        self.skipped_messages = 0  # read again after a crash, already in the state
        self._logged: set[str] = set()
        self.set_rules(ruleset, new_terms)

    # -- rules -------------------------------------------------------------------------------

    def set_rules(self, ruleset: RuleSet, new_terms: Sequence[NewTermsSpec] | None = None) -> None:
        """Use a (reloaded) rule set; partition states are kept, keys of removed detectors
        are deleted (and written as deletions)."""
        self.ruleset = ruleset
        opts = self.options
        specs = packaged_new_terms(ruleset) if new_terms is None else tuple(new_terms)
        self.new_terms_specs = specs if opts.new_terms else ()
        probe = CorrelationEngine(ruleset, opts.correlation)
        self.specs = probe.specs if opts.correlations else ()
        self.local = {s.id for s in self.specs if co_partitioned(s.group_by)}
        self._by_id = {s.id: s for s in self.specs}
        self._targets: dict[str, list[tuple[corr.CorrelationSpec, int]]] = {}
        for rule in ruleset.rules:
            pairs = [(s, i) for s, i in probe._targets.get(rule.id, []) if s.id in self._by_id]
            if pairs:
                self._targets[rule.id] = pairs
        self._nt_rules = NewTermsEngine(self.new_terms_specs, ruleset).rule_ids()
        self.suppressed = suppressed_rule_ids(ruleset, specs)
        for part in self.parts.values():
            self._rebuild(part)

    def _rebuild(self, part: PartitionState) -> None:
        part.correlations = self._corr_engine(part.correlations.store)
        part.new_terms = self._nt_engine(part.new_terms.store)
        for store, ids in (
            (part.correlations.store, self._by_id),
            (part.new_terms.store, {s.id for s in self.new_terms_specs}),
        ):
            for key in [k for k in store if k.split("|", 1)[0] not in ids]:
                del store[key]

    def _corr_engine(self, store: MutableMapping[str, Any]) -> CorrelationEngine:
        engine = CorrelationEngine(self.ruleset, self.options.correlation, store)
        engine.specs = tuple(s for s in engine.specs if s.id in self._by_id)
        engine._by_spec = {s.id: s for s in engine.specs}
        return engine

    def _nt_engine(self, store: MutableMapping[str, Any]) -> NewTermsEngine:
        engine = NewTermsEngine(self.new_terms_specs, self.ruleset, store)
        for spec in self.new_terms_specs:  # group counts are not part of the stored state
            prefix = spec.id + "|"
            engine._groups[spec.id] = sum(
                1 for k in store if k.startswith(prefix) and not k.endswith("|#start")
            )
        return engine

    def suppress(self, matches: Iterable[Match]) -> list[Match]:
        """The matches that become alerts on their own (base rules of correlations and
        first-seen detectors are left out, unless a correlation says ``generate: true``)."""
        suppressed = self.suppressed
        return [m for m in matches if m.rule.id not in suppressed]

    # -- partitions --------------------------------------------------------------------------

    def new_partition(self, partition: int, now: float = 0.0) -> PartitionState:
        """An empty state for ``partition`` (replacing any held one); ``now``: wall clock."""
        part = PartitionState(
            partition=partition,
            correlations=self._corr_engine(TrackedStore()),
            new_terms=self._nt_engine(TrackedStore()),
            anomaly=self._anomaly_model(),
            last_input=now,
            hst_saved_at=now,
            pruned_at=now,
        )
        self.parts[partition] = part
        return part

    def _anomaly_model(self) -> AnomalyModel:
        opts = self.options
        if opts.offline_model is None:
            return AnomalyModel(opts.anomaly_settings)
        return RecordingAnomalyModel(opts.anomaly_settings, online=opts.anomaly)

    def _score_offline(self, part: PartitionState) -> list[dict[str, Any]]:
        """Alerts of the offline model for every window closed since the last call, scored
        in one batch."""
        model = self.options.offline_model
        recorder = part.anomaly
        if model is None or not isinstance(recorder, RecordingAnomalyModel):
            return []
        closed = recorder.take_closed()
        try:
            return score_windows(model, closed, recorder.settings.window)
        except Exception as exc:
            self._error("offline model", exc)
            return []

    def load(
        self, partition: int, items: Iterable[tuple[bytes, bytes | None]], now: float = 0.0
    ) -> int:
        """Rebuild ``partition`` from changelog pairs (other partitions' keys are ignored);
        returns how many keys were used. Unreadable values are skipped and logged."""
        part = self.new_partition(partition, now)
        prefix = f"{partition}|".encode()
        corr_items: list[tuple[str, Any]] = []
        nt_items: list[tuple[str, Any]] = []
        used = 0
        for raw_key, raw in items:
            if raw is None or not raw_key.startswith(prefix):
                continue
            _, kind, key = raw_key.decode().split("|", 2)
            try:
                value = orjson.loads(raw)
                if kind == "c":
                    corr_items.append((key, corr.check_state(value)))
                elif kind == "n":
                    if not key.endswith("|#start"):
                        nt.check_state(value)
                    nt_items.append((key, value))
                elif kind == "a":
                    part.anomaly.principals[key] = PrincipalState.from_json(value)
                elif kind == "h":
                    part.anomaly.hst = hst_from_json(value, self.options.anomaly_settings)
                elif kind == "s":
                    part.silence[key] = {
                        "last": float(value["last"]),
                        "quiet_since": value.get("quiet_since"),
                    }
                elif kind == "m":
                    part.offsets = {str(k): int(v) for k, v in value["offsets"].items()}
                    part.wm = None if value.get("wm") is None else float(value["wm"])
                else:
                    continue
            except (StatefulError, ValueError, KeyError, TypeError) as exc:
                self._error("load", exc)
                continue
            used += 1
        part.correlations = self._corr_engine(TrackedStore(corr_items))
        part.new_terms = self._nt_engine(TrackedStore(nt_items))
        cap = self.options.anomaly_settings.max_principals
        while len(part.anomaly.principals) > cap:  # written before an eviction was recorded
            key, _ = part.anomaly.principals.popitem(last=False)
            part.touched.add(key)
        part.hst_saved = part.anomaly.windows_scored
        self._rebuild(part)
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

    def _part(self, partition: int, now: float) -> PartitionState:
        return self.parts.get(partition) or self.new_partition(partition, now)

    def _enter(
        self, partition: int, topic: str, offset: int | None, now: float, skip: bool | None
    ) -> PartitionState | None:
        """The partition's state for an incoming message (marked as just heard from), or
        None when the message is already in it (``skip``, by default `applied`) and is dropped.
        """
        if skip is None:
            skip = self.applied(partition, topic, offset)
        part = self._part(partition, now)
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
        opts = self.options
        latest: dict[str, float] = {}
        wm = part.wm
        for event in events:
            t = event_time(event)
            if t is None:
                continue
            if wm is None or t > wm:
                wm = t
            c = cluster_of(event)
            if t > latest.get(c, float("-inf")):
                latest[c] = t
        part.wm = wm
        if opts.windows:
            model = part.anomaly
            principals = model.principals
            urgent, lazy = part.touched, part.lazy
            for event in events:
                key = principal_key(event)
                before = principals.get(key)
                window = before.window if before is not None else None
                try:
                    alerts.extend(model.observe(event))
                except Exception as exc:
                    self._error("anomaly", exc)
                    continue
                after = principals.get(key)
                if after is None or before is None or after.window != window:
                    urgent.add(key)  # new principal or a closed window: the baseline changed
                elif key not in urgent:
                    lazy.add(key)  # only the open window's counts: checkpointed periodically
            alerts.extend(self._score_offline(part))
        targets, nt_rules = self._targets, self._nt_rules
        for match in matches:
            rid = match.rule.id
            pairs = targets.get(rid)
            if pairs:
                alerts.extend(self._correlate(part, match, pairs))
            if rid in nt_rules:
                try:
                    alerts.extend(part.new_terms.process(match))
                except Exception as exc:
                    self._error("new_terms", exc)
        if opts.silence:
            for cluster, t in latest.items():
                sent = part.heartbeats.get(cluster)
                if sent is None or t >= sent + opts.heartbeat_every:
                    part.heartbeats[cluster] = t
                    dest = self._owner(_SILENCE + cluster)
                    beats = part.rekey_beats.setdefault(dest, {})
                    beats[cluster] = max(t, beats.get(cluster, t))
        if offset is not None:
            part.offsets[topic] = offset
            part.meta_dirty = True
        return alerts

    def _owner(self, key: str) -> int:
        return partition_for(key.encode(), self.partitions)

    def _correlate(
        self, part: PartitionState, match: Match, pairs: list[tuple[corr.CorrelationSpec, int]]
    ) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        engine = part.correlations
        for spec, idx in pairs:
            try:
                obs = corr.observe(spec, idx, match.event)
                if obs is None:
                    engine.unusable += 1
                    continue
                if spec.id not in self.local:
                    dest = self._owner(obs.key)
                    part.rekeyed.setdefault(dest, []).append([spec.id, idx, match.event])
                    continue
                store = engine.store
                state, fired = corr.step(
                    spec, store.get(obs.key), obs, self.options.correlation, copy=False
                )
                store[obs.key] = state
                alerts.extend(fired)
            except Exception as exc:
                self._error("correlation", exc)
        return alerts

    def take_rekeyed(self, partition: int) -> list[Rekeyed]:
        """By-group messages produced by ``partition`` since the last call (one per target
        partition), to be delivered before the partition's `changes` are written."""
        part = self.parts.get(partition)
        if part is None or not (part.rekeyed or part.rekey_beats):
            return []
        out = []
        for dest in sorted(set(part.rekeyed) | set(part.rekey_beats)):
            items = part.rekeyed.get(dest, [])
            beats = part.rekey_beats.get(dest, {})
            value = _json({"v": REKEY_VERSION, "matches": items, "heartbeats": beats})
            key = (items[0][0] if items else "#heartbeat").encode()
            out.append(Rekeyed(dest, key, value))
        part.rekeyed, part.rekey_beats = {}, {}
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
        """Feed one by-group message (re-keyed matches and silence heartbeats)."""
        part = self._enter(partition, topic, offset, now, skip)
        if part is None:
            return []
        alerts: list[dict[str, Any]] = []
        try:
            doc = orjson.loads(value or b"")
            if not isinstance(doc, dict) or doc.get("v") != REKEY_VERSION:
                raise ValueError(f"unsupported by-group message {str(doc)[:80]}")
            items = doc.get("matches") or []
            beats = doc.get("heartbeats") or {}
        except ValueError as exc:
            self._error("by-group message", exc)
            items, beats = [], {}
        engine = part.correlations
        for item in items:
            try:
                spec = self._by_id.get(item[0])
                if spec is None:  # removed by a reload since it was sent
                    continue
                obs = corr.observe(spec, int(item[1]), item[2])
                if obs is None:
                    engine.unusable += 1
                    continue
                if part.wm is None or obs.time > part.wm:
                    part.wm = obs.time
                state, fired = corr.step(
                    spec, engine.store.get(obs.key), obs, self.options.correlation, copy=False
                )
                engine.store[obs.key] = state
                alerts.extend(fired)
            except Exception as exc:
                self._error("correlation", exc)
        if self.options.silence:
            for cluster, t in beats.items():
                try:
                    t = float(t)
                    entry = part.silence.get(cluster)
                    if entry is not None and t <= entry["last"]:
                        continue
                    part.silence, back = silence.came_back(part.silence, cluster, t)
                    part.silence_dirty.add(cluster)
                    alerts.extend(back)
                    if part.wm is None or t > part.wm:
                        part.wm = t
                except Exception as exc:
                    self._error("silence", exc)
        if offset is not None:
            part.offsets[topic] = offset
            part.meta_dirty = True
        return alerts

    # -- timer -------------------------------------------------------------------------------

    def watermark(self, partition: int, now: float) -> float | None:
        """The partition's event-time watermark at wall time ``now`` (see the docstring)."""
        part = self.parts.get(partition)
        if part is None or part.wm is None:
            return None
        idle = now - part.last_input - self.options.idle_grace
        return part.wm + idle if idle > 0 else part.wm

    def tick(self, partition: int, now: float) -> list[dict[str, Any]]:
        """Judge closed windows, quiet clusters and expired terms at the partition's
        watermark (``now``: the caller's wall clock)."""
        part = self.parts.get(partition)
        wm = self.watermark(partition, now)
        if part is None or wm is None:
            return []
        opts = self.options
        alerts: list[dict[str, Any]] = []
        judged = wm - opts.advance_delay
        try:
            alerts.extend(part.correlations.advance(judged))
        except Exception as exc:
            self._error("correlation advance", exc)
        if opts.windows:
            model = part.anomaly
            cfg = model.settings
            limit = judged - cfg.lateness
            part.touched.update(
                k
                for k, s in model.principals.items()
                if s.counts[0] and (s.window + 1) * cfg.window <= limit
            )
            try:
                alerts.extend(model.advance(judged))
            except Exception as exc:
                self._error("anomaly advance", exc)
            alerts.extend(self._score_offline(part))
            if model.windows_scored != part.hst_saved and (
                now - part.hst_saved_at >= opts.hst_checkpoint_every
            ):
                part.hst_dirty = True
                part.hst_saved_at = now
        if opts.new_terms and now - part.pruned_at >= opts.prune_every:
            part.pruned_at = now
            self._prune_terms(part, judged)
        if opts.silence and part.silence:
            try:
                new, quiet = silence.check(part.silence, wm, opts.silence_threshold)
                for a in quiet:
                    part.silence_dirty.add(a["evidence"]["cluster"])
                part.silence = new
                alerts.extend(quiet)
            except Exception as exc:
                self._error("silence check", exc)
        return alerts

    def _prune_terms(self, part: PartitionState, now: float) -> None:
        engine = part.new_terms
        by_id = {s.id: s for s in self.new_terms_specs}
        store = engine.store
        for key in list(store):
            spec = by_id.get(key.split("|", 1)[0])
            if spec is None or spec.ttl is None or key.endswith("|#start"):
                continue
            state = store[key]
            kept = nt.prune(spec, state, now)
            if kept is None:
                del store[key]
                engine._groups[spec.id] -= 1
            elif len(kept["terms"]) != len(state["terms"]):
                store[key] = kept

    # -- output ------------------------------------------------------------------------------

    def changes(self, partition: int, now: float | None = None) -> list[tuple[bytes, bytes | None]]:
        """Changelog writes for everything changed since the last call: ``(key, JSON value)``,
        ``None`` deletes the key; the meta key comes last. Principals whose open window alone
        changed are included every ``anomaly_checkpoint_every`` seconds of ``now`` (always
        when ``now`` is None)."""
        part = self.parts.get(partition)
        if part is None:
            return []
        if part.lazy and (
            now is None or now - part.lazy_at >= self.options.anomaly_checkpoint_every
        ):
            part.touched |= part.lazy
            part.lazy = set()
            part.lazy_at = part.lazy_at if now is None else now
        p = partition
        out: list[tuple[bytes, bytes | None]] = []
        assert isinstance(part.correlations.store, TrackedStore)
        assert isinstance(part.new_terms.store, TrackedStore)
        for kind, store in (("c", part.correlations.store), ("n", part.new_terms.store)):
            data = store.data
            for key in sorted(store.take_dirty()):
                value = data.get(key)
                out.append((_key(p, kind, key), None if value is None else _json(value)))
        principals = part.anomaly.principals
        for key in sorted(part.touched):
            state = principals.get(key)
            out.append((_key(p, "a", key), None if state is None else _json(state.to_json())))
        part.touched = set()
        for cluster in sorted(part.silence_dirty):
            entry = part.silence.get(cluster)
            out.append((_key(p, "s", cluster), None if entry is None else _json(entry)))
        part.silence_dirty = set()
        if part.anomaly.windows_scored != part.hst_saved and (
            now is None or now - part.hst_saved_at >= self.options.hst_checkpoint_every
        ):
            part.hst_dirty = True
            part.hst_saved_at = part.hst_saved_at if now is None else now
        if part.hst_dirty:
            out.append((_key(p, "h"), _json(hst_to_json(part.anomaly.hst))))
            part.hst_dirty = False
            part.hst_saved = part.anomaly.windows_scored
        if part.meta_dirty or out:
            out.append((_key(p, "m"), _json({"offsets": part.offsets, "wm": part.wm})))
            part.meta_dirty = False
        return out
