"""CPU time per pipeline stage (pure): where a worker's microseconds per event go.

The agents time each stage of each message with the event-loop thread's CPU clock
(``time.thread_time_ns``: a few calls per message of up to hundreds of events, so the
timers cost well under 0.1 µs per event) and add it here; redaction, which runs per event
inside decoding, is timed by the decoder with the cheaper wall clock and reported as its
own stage (and subtracted from ``decode``). The status snapshot (``stages``) gives every
stage in CPU µs per event normalised, which `bench pipeline` prints next to the process
and loop-thread CPU of the same run: their difference is what no timer covers (Kafka in,
Faust's stream machinery, the producer's I/O, timers).

>>> t = StageTimes(clock=iter(range(0, 10_000, 1000)).__next__)
>>> with t.timed("engine"):
...     pass
>>> t.add("decode", 3000); t.events = 2
>>> t.per_event()["engine"], t.per_event()["decode"], t.per_event()["total"]
(0.5, 1.5, 2.0)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["STAGES", "StageTimes"]

#: The stages, in the order an event meets them.
STAGES = (
    "decode",  # raw payload bytes -> validated canonical events (orjson, checks)
    "redact",  # secrets out of each event (schemas.redact), part of decoding
    "route",  # events -> events partition (cluster|user key, murmur2)
    "encode",  # events -> events-topic messages (orjson)
    "kafka_out_events",  # events messages queued into the producer
    "parse",  # events message -> events (handoff hit, else orjson)
    "engine",  # stateless rules (detections.Engine.evaluate_batch)
    "stateful",  # correlations, new terms, anomaly, silence (StatefulProcessor.process)
    "alert_build",  # matches -> alert documents and their JSON
    "grouping",  # detections.grouping.Grouper
    "kafka_out_alerts",  # alerts and dead letters queued into the producer / sinks
    "stateful_out",  # stateful alerts, by-group messages, state changes (awaits delivery)
)


class StageTimes:
    """Nanoseconds per stage since the worker started, and the events they were spent on."""

    def __init__(self, clock: Callable[[], int] = time.thread_time_ns) -> None:
        self.clock = clock
        self.ns: dict[str, int] = dict.fromkeys(STAGES, 0)
        #: Events normalised (the denominator of `per_event`).
        self.events = 0

    def add(self, stage: str, ns: int) -> None:
        """Count ``ns`` nanoseconds against ``stage``."""
        self.ns[stage] += ns

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Time the block against ``stage`` (its exceptions are not this timer's business)."""
        start = self.clock()
        try:
            yield
        finally:
            self.ns[stage] += self.clock() - start

    def per_event(self) -> dict[str, float]:
        """CPU µs per normalised event by stage, and their ``total`` (empty before any)."""
        if not self.events:
            return {}
        out = {k: round(v / 1000 / self.events, 2) for k, v in self.ns.items()}
        out["total"] = round(sum(self.ns.values()) / 1000 / self.events, 2)
        return out
