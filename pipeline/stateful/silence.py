"""The silence family: "cluster went quiet" / "came back" (`detections.stateful.silence`).

A cluster's events are spread over every partition, so one partition owns its silence
state: the by-group partition of ``#silence|<cluster>``. Every partition sends it a
heartbeat per cluster (its newest event time there) at most every ``heartbeat_every``
event-time seconds; the owner records each newer heartbeat and checks for quiet clusters at
its watermark from the timer.

Changelog kind ``s``: one cluster's entry (key: the cluster).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from detections.stateful import silence
from pipeline.stateful.family import Alerts, Dumped, Family, Tick

__all__ = ["OWNER_PREFIX", "Silence", "SilenceState"]

#: The by-group key whose partition owns a cluster's silence state: prefix + cluster.
OWNER_PREFIX = "#silence|"


@dataclass
class SilenceState:
    """Owned clusters' entries, and this partition's heartbeats (sent and to send)."""

    clusters: dict[str, Any] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    sent: dict[str, float] = field(default_factory=dict)  # cluster -> last sent (memory only)
    outbox: dict[int, dict[str, float]] = field(default_factory=dict)  # partition -> beats


class Silence(Family[SilenceState]):
    """Heartbeats per cluster to its owner partition; see the module docstring."""

    name = "silence"
    setting = "silence"
    kinds: ClassVar[Mapping[str, str]] = {"s": "silence entry of an owned cluster"}
    rekey_field = "heartbeats"
    rekey_empty: ClassVar[dict[str, float]] = {}

    def new_state(self, now: float) -> SilenceState:
        return SilenceState()

    def dump(self, state: SilenceState, now: float | None) -> Iterator[Dumped]:
        for cluster in sorted(state.dirty):
            yield "s", cluster, state.clusters.get(cluster)
        state.dirty = set()

    def load(self, state: SilenceState, kind: str, key: str, value: Any) -> None:
        state.clusters[key] = {
            "last": float(value["last"]),
            "quiet_since": value.get("quiet_since"),
        }

    def on_events(
        self,
        state: SilenceState,
        events: Sequence[dict[str, Any]],
        times: Sequence[float | None],
        newest: dict[str, float],
        alerts: Alerts,
    ) -> None:
        every = self.options.heartbeat_every
        for cluster, t in newest.items():
            sent = state.sent.get(cluster)
            if sent is None or t >= sent + every:
                state.sent[cluster] = t
                dest = self.ctx.owner(OWNER_PREFIX + cluster)
                beats = state.outbox.setdefault(dest, {})
                beats[cluster] = max(t, beats.get(cluster, t))

    def take_rekeyed(self, state: SilenceState) -> dict[int, Any]:
        out, state.outbox = state.outbox, {}
        return out

    def rekey_key(self, payload: Any) -> str:
        return "#heartbeat"

    def on_rekeyed(self, state: SilenceState, payload: Any, alerts: Alerts) -> float | None:
        newest: float | None = None
        for cluster, value in (payload or {}).items():
            try:
                t = float(value)
                entry = state.clusters.get(cluster)
                if entry is not None and t <= entry["last"]:
                    continue
                state.clusters, back = silence.came_back(state.clusters, cluster, t)
                state.dirty.add(cluster)
                alerts.extend(back)
                if newest is None or t > newest:
                    newest = t
            except Exception as exc:
                self.ctx.error("silence", exc)
        return newest

    def on_tick(self, state: SilenceState, tick: Tick, alerts: Alerts) -> None:
        if not state.clusters:
            return
        try:
            new, quiet = silence.check(state.clusters, tick.wm, self.options.silence_threshold)
            for a in quiet:
                state.dirty.add(a["evidence"]["cluster"])
            state.clusters = new
            alerts.extend(quiet)
        except Exception as exc:
            self.ctx.error("silence check", exc)
