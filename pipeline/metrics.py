"""Worker counters and the health snapshot (pure): what `klaxon status` and the logs show.

Liveness alone misses Faust's known failure mode of consumers that silently stop
(faust-streaming #175), so the snapshot carries per-partition consumer lag and seconds
since the last message, next to the counters whose accounting equation must hold::

    events_in == normalised + dead_lettered + sum(filtered.values())

>>> c = Counters()
>>> c.add_normalise(events_in=5, normalised=3, dead=1, filtered={"stage:RequestReceived": 1},
...                 messages_out=2)
>>> c.balanced()
True
>>> snap = health_snapshot(c, lag={"raw:0": 4}, since_last=2.5, now=0.0, started=0.0,
...                        rules=12, interval=30.0)
>>> snap["lag_total"], snap["counters"]["events_in"], snap["status"]
(4, 5, 'ok')
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "STATUSES",
    "Counters",
    "Progress",
    "health_snapshot",
    "read_status",
    "snapshot_problems",
]


@dataclass
class Counters:
    """Monotonic counters of one worker process (reset on restart)."""

    raw_messages: int = 0
    events_in: int = 0
    normalised: int = 0
    dead_lettered: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    events_messages_out: int = 0
    events_messages_in: int = 0
    detect_events: int = 0
    alerts: int = 0
    detect_dead_lettered: int = 0
    send_errors: int = 0
    engine_reloads: int = 0
    reload_failures: int = 0
    #: events messages whose parsed events came from this process's normalise agent / not
    handoff_hits: int = 0
    handoff_misses: int = 0
    #: input messages fetched again after they were processed (skipped, not reprocessed)
    redelivered: int = 0
    #: times an input partition skipped offsets and was sought back to the missing one
    gaps: int = 0
    #: input offsets deleted by retention before they were processed
    lost_to_retention: int = 0
    #: offset commits the broker refused (retried; uncommitted input is processed again)
    commit_failures: int = 0
    #: times a stalled input partition was sought back to its next unprocessed offset
    rewinds: int = 0
    #: times the state recovery read nothing for ``--rewind-after`` seconds and was sought
    #: back to where it stopped (`pipeline.tables.RecoveryNudge`)
    recovery_nudges: int = 0
    #: exceptions a stateful detector raised on an event (the event's other work went on)
    stateful_errors: int = 0

    def add_normalise(
        self,
        *,
        events_in: int,
        normalised: int,
        dead: int,
        filtered: Mapping[str, int],
        messages_out: int,
    ) -> None:
        """Account for one raw message."""
        self.raw_messages += 1
        self.events_in += events_in
        self.normalised += normalised
        self.dead_lettered += dead
        self.events_messages_out += messages_out
        for reason, count in filtered.items():
            self.filtered[reason] = self.filtered.get(reason, 0) + count

    def add_detect(self, *, events: int, alerts: int, dead: int) -> None:
        """Account for one events message."""
        self.events_messages_in += 1
        self.detect_events += events
        self.alerts += alerts
        self.detect_dead_lettered += dead

    def balanced(self) -> bool:
        """Whether every event that came in is accounted for exactly once."""
        out = self.normalised + self.dead_lettered + sum(self.filtered.values())
        return self.events_in == out

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        data = asdict(self)
        data["filtered"] = dict(sorted(self.filtered.items()))
        return data


class Progress:
    """Last processed offset per ``(topic, partition)`` and when the last message arrived.

    Also the process and event-loop-thread CPU seconds at the first and the latest processed
    message, so a throughput measurement can tell computing from waiting.
    """

    def __init__(
        self,
        clock: Any = time.monotonic,
        wall: Any = time.time,
        cpu: Any = time.process_time,
        thread_cpu: Any = time.thread_time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._cpu = cpu
        self._thread_cpu = thread_cpu
        self.offsets: dict[tuple[str, int], int] = {}
        self.last_message_at: float | None = None
        self.first_wall: float | None = None
        self.last_wall: float | None = None
        self.first_cpu: tuple[float, float] | None = None
        self.last_cpu: tuple[float, float] | None = None

    def mark(self, topic: str, partition: int, offset: int) -> None:
        """Record that ``offset`` of ``topic``/``partition`` has been processed."""
        self.offsets[(topic, partition)] = offset
        self.last_message_at = self._clock()
        self.last_wall = self._wall()
        self.last_cpu = (self._cpu(), self._thread_cpu())
        if self.first_wall is None:
            self.first_wall = self.last_wall
            self.first_cpu = self.last_cpu

    def cpu_seconds(self) -> dict[str, float] | None:
        """CPU seconds used from the first to the latest processed message (None before two).

        ``process`` counts every thread (Faust runs the Kafka consumer in its own thread),
        ``loop`` only the thread that marks progress (the event loop running the agents).

        >>> ticks = iter([1.0, 0.5, 3.0, 2.0])
        >>> p = Progress(cpu=lambda: next(ticks), thread_cpu=lambda: next(ticks))
        >>> p.mark("raw", 0, 1); p.mark("raw", 0, 2); p.cpu_seconds()
        {'process': 2.0, 'loop': 1.5}
        """
        if self.first_cpu is None or self.last_cpu is None:
            return None
        return {
            "process": round(self.last_cpu[0] - self.first_cpu[0], 4),
            "loop": round(self.last_cpu[1] - self.first_cpu[1], 4),
        }

    def since_last(self) -> float | None:
        """Seconds since the last processed message (None before the first)."""
        return None if self.last_message_at is None else self._clock() - self.last_message_at


#: Every ``status`` a snapshot can have, worst first; the last four are healthy for a probe.
STATUSES = ("failing", "stalled", "degraded", "recovering", "starting", "ok")


def health_snapshot(
    counters: Counters,
    *,
    lag: Mapping[str, int],
    since_last: float | None,
    now: float,
    started: float,
    rules: int,
    interval: float,
    wall: datetime | None = None,
    progress: Progress | None = None,
    sends_in_flight: int | None = None,
    broker: str = "ok",
    broker_error: str | None = None,
    stalled: list[str] | None = None,
    stalled_for: float = 0.0,
    recovering: bool = False,
) -> dict[str, Any]:
    """The JSON document logged every ``interval`` seconds and written to the status file.

    ``lag`` is end offset minus *committed* offset per input partition (`pipeline.watchdog`).
    ``status``: ``failing`` (a send failed), ``stalled`` (a partition's commit has not moved
    for the stall time with messages waiting), ``degraded`` (the broker does not answer),
    ``recovering`` (the stateful detectors' state is being read back from its changelog;
    every stream waits for it), ``starting`` (no broker answer yet), else ``ok``.

    >>> c = Counters()
    >>> [health_snapshot(c, lag={"raw:0": 3}, since_last=None, now=1, started=0, rules=1,
    ...                  interval=5, broker=b, stalled=s, recovering=r)["status"]
    ...  for b, s, r in [("ok", [], False), ("unreachable", [], False),
    ...                  ("ok", ["raw:0"], True), ("unknown", [], True), ("unknown", [], False)]]
    ['ok', 'degraded', 'stalled', 'recovering', 'starting']
    """
    lag_total = sum(lag.values())
    status = "ok"
    if counters.send_errors:
        status = "failing"
    elif stalled:
        status = "stalled"
    elif broker == "unreachable":
        status = "degraded"
    elif recovering:  # reading the changelog: the broker answers its fetches
        status = "recovering"
    elif broker != "ok":
        status = "starting"
    return {
        "at": (wall or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "status": status,
        "broker": broker,
        "broker_error": broker_error,
        "stalled": list(stalled or []),
        "stalled_for_s": round(stalled_for, 1),
        "uptime_s": round(now - started, 1),
        "interval_s": interval,
        "seconds_since_last_message": None if since_last is None else round(since_last, 1),
        "lag_total": lag_total,
        "lag": dict(lag),
        "rules": rules,
        "counters": counters.as_dict(),
        # epoch seconds of the first and latest processed message (throughput measurements)
        "first_message_at": progress.first_wall if progress else None,
        "last_message_at": progress.last_wall if progress else None,
        "cpu_s_first_to_last": progress.cpu_seconds() if progress else None,
        # produced messages not yet acknowledged by the broker (0: all output is delivered)
        "sends_in_flight": sends_in_flight,
    }


def read_status(path: str | Path) -> dict[str, Any] | None:
    """A worker's status file (`pipeline.agents.write_status`), or None while it is missing
    or being replaced (the worker writes a temp file and renames it, so a read never sees
    half a document; a missing file is the usual case before the first health tick).

    >>> read_status("/nonexistent/status.json") is None
    True
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def snapshot_problems(snapshot: Mapping[str, Any], *, age: float) -> list[str]:
    """Why a status snapshot ``age`` seconds old says the worker is unhealthy (empty: healthy).

    >>> snapshot_problems({"status": "ok", "interval_s": 5}, age=3)
    []
    >>> snapshot_problems({"status": "stalled", "interval_s": 5}, age=60)
    ['status is stalled', 'snapshot is 60s old (worker writes every 5s)']
    """
    problems = []
    if snapshot.get("status") not in ("ok", "starting", "recovering", "degraded"):
        problems.append(f"status is {snapshot.get('status')}")
    interval = float(snapshot.get("interval_s") or 0)
    if interval and age > 3 * interval:
        problems.append(f"snapshot is {age:.0f}s old (worker writes every {interval:g}s)")
    return problems
