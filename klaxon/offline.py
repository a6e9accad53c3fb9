"""Offline replay: the worker's processing functions in one process, no Kafka.

``klaxon replay --offline`` (or with no broker configured) feeds the replay's raw messages
(`replay.reader.iter_batches`, the batches the producer would send) through what the worker
does with them, in the same order and with the same partitioning:

1. `pipeline.processing.normalise_message` per raw message (one raw partition, offsets
   counting up), giving one events message per events partition of the ``cluster|user`` key;
2. `pipeline.processing.detect_message` per events message, with the engine wrapped as the
   worker's stateful shell wraps it (`pipeline.tables.BoundEngine`): the stateless matches
   go to the `StatefulProcessor` (correlations, new terms, anomaly, silence), base-rule
   matches are suppressed, stateful alerts follow the message's stateless ones;
3. by-group messages (`StatefulProcessor.take_rekeyed`) are delivered at once to their
   partition (`process_rekeyed`), as the by-group agent would;
4. every partition is ticked once a wall second (the worker's watermark timer), and at the
   end once more with a clock far enough ahead that every open correlation and anomaly
   window is judged. The end of the input is not a cluster going quiet: that last tick's
   "audit log went quiet" alerts are dropped;
5. every message's alerts (stateless, then stateful) go through the worker's
   `detections.grouping.Grouper` (grouping, folding, rate limit, incidents); at the end
   every open group is closed (its last update sent).

Alert ids are the pipeline's: same rules, same events, same functions. Composed here because
it needs both `replay` (reading) and `pipeline` (processing), which never import each other.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from pipeline.config import Settings
from pipeline.processing import Outgoing, Source, detect_message, normalise_message

if TYPE_CHECKING:
    from detections.grouping import Grouper
    from pipeline.stateful import StatefulProcessor

__all__ = ["OfflineRun", "OfflineSummary", "build_offline"]

#: Wall seconds between two ticks of every partition (the worker's watermark timer).
TICK_INTERVAL = 1.0
#: Name of the by-group input in the processor's offsets (the worker's ``<events>.by-group``).
REKEY_TOPIC = "by-group"


@dataclass
class OfflineSummary:
    """What one offline run read, normalised, filtered, dead-lettered and alerted on."""

    read: int = 0
    normalised: int = 0
    filtered: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    raw_messages: int = 0
    events_messages: int = 0
    by_rule: Counter[str] = field(default_factory=Counter)
    by_severity: Counter[str] = field(default_factory=Counter)
    #: The grouper's counters (`detections.grouping.Grouper.stats`); empty without one.
    grouping: dict[str, int] = field(default_factory=dict)

    @property
    def alerts(self) -> int:
        """Alerts found."""
        return sum(self.by_severity.values())


class _BoundEngine:
    """The engine `detect_message` sees for one events message: the worker's
    `pipeline.tables.BoundEngine` without Kafka (stateful alerts kept for afterwards)."""

    def __init__(self, run: OfflineRun, partition: int, offset: int) -> None:
        self.run = run
        self.partition = partition
        self.offset = offset
        self.stateful: list[dict[str, Any]] = []

    def evaluate_batch(self, events: list[dict[str, Any]]) -> list[Any]:
        run = self.run
        matches = run.engine.evaluate_batch(events)
        if run.processor is None:
            return list(matches)
        self.stateful += run.processor.process(
            events,
            matches,
            self.partition,
            topic=run.settings.topic_events,
            offset=self.offset,
            now=run.clock(),
            skip=False,
        )
        return run.processor.suppress(matches)


class OfflineRun:
    """Raw messages in (`raw`), alert documents out; `finish` judges what is still open."""

    def __init__(
        self,
        settings: Settings,
        engine: Any,
        to_alert: Callable[[Any], dict[str, Any]],
        processor: StatefulProcessor | None,
        *,
        cluster: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        grouper: Grouper | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.to_alert = to_alert
        self.processor = processor
        self.cluster = cluster or settings.cluster
        self.clock = clock
        self.summary = OfflineSummary()
        from detections.alert import add_labels

        self._add_labels = add_labels
        self.redaction = settings.redaction()
        self.labels = settings.label_map
        self.grouper = grouper
        self._offsets: dict[int, int] = {}  # next offset per events partition
        self._rekey_offsets: dict[int, int] = {}
        self._last_tick = clock()

    def raw(self, payload: bytes) -> list[dict[str, Any]]:
        """One raw-topic message: its alerts (stateless and stateful), in the worker's order."""
        s = self.summary
        source = Source(self.settings.topic_raw, 0, s.raw_messages)
        s.raw_messages += 1
        result = normalise_message(
            payload,
            source,
            partitions=self.settings.partitions,
            cluster=self.cluster,
            redaction=self.redaction,
        )
        s.read += result.events_in
        s.normalised += result.normalised
        s.filtered.update(result.filtered)
        self._dead(result.dead_letters)
        alerts: list[dict[str, Any]] = []
        for message in result.messages:
            alerts += self._detect(message)
        if self.clock() - self._last_tick >= TICK_INTERVAL:
            alerts += self.tick(self.clock())
        return alerts

    def _detect(self, message: Outgoing) -> list[dict[str, Any]]:
        partition = message.partition or 0
        offset = self._offsets.get(partition, 0)
        self._offsets[partition] = offset + 1
        self.summary.events_messages += 1
        bound = _BoundEngine(self, partition, offset)
        source = Source(self.settings.topic_events, partition, offset)
        result = detect_message(message.value, source, bound, self.to_alert, decoded=message.events)
        self._dead(result.dead_letters)
        alerts = [a.doc for a in result.alerts if a.doc is not None]
        return self._count(
            self._group(
                alerts + bound.stateful + self._deliver(partition), result.latest, partition
            )
        )

    def _group(
        self, alerts: list[dict[str, Any]], latest: str | None = None, partition: int = 0
    ) -> list[dict[str, Any]]:
        """Through the worker's grouper, with the events partition as the watermark source."""
        if self.grouper is None:
            return alerts
        return self.grouper.add(alerts, latest, source=partition, now=self.clock())

    def _deliver(self, partition: int) -> list[dict[str, Any]]:
        """By-group messages of ``partition`` (and any they cause), delivered in order."""
        processor = self.processor
        if processor is None:
            return []
        alerts: list[dict[str, Any]] = []
        queue = list(processor.take_rekeyed(partition))
        while queue:
            rec = queue.pop(0)
            offset = self._rekey_offsets.get(rec.partition, 0)
            self._rekey_offsets[rec.partition] = offset + 1
            alerts += processor.process_rekeyed(
                rec.value, rec.partition, topic=REKEY_TOPIC, offset=offset, now=self.clock()
            )
            queue += processor.take_rekeyed(rec.partition)
        return alerts

    def tick(self, now: float, *, final: bool = False) -> list[dict[str, Any]]:
        """The watermark timer over every partition (``final``: quiet alerts dropped)."""
        self._last_tick = now
        processor = self.processor
        if processor is None:
            return []
        alerts: list[dict[str, Any]] = []
        for partition in range(self.settings.partitions):
            alerts += processor.tick(partition, now)
            alerts += self._deliver(partition)
        if final:
            from detections.stateful.silence import QUIET

            alerts = [a for a in alerts if (a.get("rule") or {}).get("id") != QUIET.id]
        return self._count(self._group(alerts) if alerts else [])

    def finish(self) -> list[dict[str, Any]]:
        """The last tick: far enough ahead that every open window is judged."""
        processor = self.processor
        if processor is None:
            return self._close()
        options = processor.options
        horizon = options.anomaly_settings.window + options.anomaly_settings.lateness
        specs = getattr(processor.family("correlations"), "specs", ())
        for spec in specs:
            horizon = max(horizon, spec.timespan + options.correlation.lateness)
        now = self.clock() + options.idle_grace + options.advance_delay + horizon + 1.0
        return self.tick(now, final=True) + self._close()

    def _close(self) -> list[dict[str, Any]]:
        """Every open group's last update (the input has ended)."""
        return self._count(self.grouper.close()) if self.grouper is not None else []

    def _dead(self, letters: list[bytes]) -> None:
        for letter in letters:
            try:
                reason = str(orjson.loads(letter).get("reason", "?"))
            except (orjson.JSONDecodeError, AttributeError):
                reason = "?"
            self.summary.dead_lettered[reason] += 1

    def _count(self, alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Count alerts by rule and severity, and give them the static labels."""
        s = self.summary
        if self.grouper is not None:
            s.grouping = dict(self.grouper.stats)
        for alert in alerts:
            self._add_labels(alert, self.labels)
            s.by_rule[str((alert.get("rule") or {}).get("title", "?"))] += 1
            s.by_severity[str(alert.get("severity", "?"))] += 1
        return alerts

    def run(self, payloads: Iterator[bytes]) -> Iterator[dict[str, Any]]:
        """Every alert of ``payloads`` (raw messages), the final tick's included."""
        for payload in payloads:
            yield from self.raw(payload)
        yield from self.finish()


def build_offline(
    settings: Settings, *, cluster: str | None = None, clock: Callable[[], float] = time.monotonic
) -> OfflineRun:
    """An `OfflineRun` with the worker's engine (``KLAXON_RULES``, ``KLAXON_LISTS``) and
    stateful options (``KLAXON_STATEFUL_DETECTORS`` and the rest); raises
    `detections.RuleLoadError` or `pipeline.errors.ConfigError`."""
    from detections.alert import alert_builder
    from detections.grouping import Grouper
    from pipeline.reload import build_engine
    from pipeline.stateful import StatefulProcessor, options_from_settings

    engine, _ = build_engine(
        list(settings.rules_paths), list(settings.lists_paths), settings.rule_selection()
    )
    options = options_from_settings(settings)
    processor = StatefulProcessor(engine.ruleset, partitions=settings.partitions, options=options)
    grouper = Grouper(settings.group_options())
    grouper.set_rules(engine.ruleset.rules)
    to_alert = alert_builder(settings.label_map)
    return OfflineRun(
        settings, engine, to_alert, processor, cluster=cluster, clock=clock, grouper=grouper
    )
