"""The anomaly family: the online per-principal model (`detections.stateful.anomaly`, with
its river HalfSpaceTrees) over every event of a partition, and the offline IsolationForest
(`StatefulOptions.offline_model`) that scores the same windows, all windows closed by one
message or one tick in one batch (`detections.stateful.offline.score_windows`).

Changelog kinds ``a`` (one principal, key ``<cluster>|<user>``), ``p`` (one peer-group
baseline, key ``<cluster>|<group>``, written with the message or tick that changed it) and
``h`` (the partition's HalfSpaceTrees, empty key). Principal, peer and HST values carry a
format version: a v1 principal (before peer baselines) is migrated, anything unreadable is
reported by the processor and starts afresh. A principal whose window closed (a baseline
change) or that is new is written with the message that changed it; one whose open window's
counts alone changed every ``anomaly_checkpoint_every`` wall seconds (0, the default: with
every message too); the trees every ``hst_checkpoint_every`` seconds (0: with every change).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from detections.stateful import AnomalyModel
from detections.stateful.anomaly import Baseline, PrincipalState, hst_from_json, hst_to_json
from detections.stateful.offline import RecordingAnomalyModel, score_windows
from pipeline.stateful.family import Alerts, Dumped, Family, Tick
from pipeline.stateful.options import StatefulOptions
from schemas.keys import principal_key

__all__ = ["Anomaly", "AnomalyState"]


@dataclass
class AnomalyState:
    """One partition's model and what of it is still to be written."""

    model: AnomalyModel
    touched: set[str] = field(default_factory=set)  # principals to write at the next dump
    lazy: set[str] = field(default_factory=set)  # principals whose open window alone changed
    lazy_at: float = 0.0  # wall clock of the last write of the lazy principals
    hst_dirty: bool = False
    hst_saved: int = 0  # windows_scored at the last HST checkpoint
    hst_saved_at: float = 0.0


class Anomaly(Family[AnomalyState]):
    """Every event to the per-principal model; see the module docstring."""

    name = "anomaly"
    setting = "anomaly"
    kinds: ClassVar[Mapping[str, str]] = {
        "a": "principal",
        "p": "peer-group baseline",
        "h": "the partition's HalfSpaceTrees",
    }

    @classmethod
    def is_enabled(cls, options: StatefulOptions) -> bool:
        """Windows are kept for the online model, and for the offline one even without it."""
        return options.windows

    # -- state -------------------------------------------------------------------------------

    def new_state(self, now: float) -> AnomalyState:
        opts = self.options
        if opts.offline_model is None:
            model = AnomalyModel(opts.anomaly_settings)
        else:
            model = RecordingAnomalyModel(opts.anomaly_settings, online=opts.anomaly)
        return AnomalyState(model, hst_saved_at=now)

    def dump(self, state: AnomalyState, now: float | None) -> Iterator[Dumped]:
        opts = self.options
        if state.lazy and (now is None or now - state.lazy_at >= opts.anomaly_checkpoint_every):
            state.touched |= state.lazy
            state.lazy = set()
            state.lazy_at = state.lazy_at if now is None else now
        principals = state.model.principals
        for key in sorted(state.touched):
            principal = principals.get(key)
            yield "a", key, None if principal is None else principal.to_json()
        state.touched = set()
        peers = state.model.peers
        for key in sorted(state.model.take_dirty_peers()):
            peer = peers.get(key)
            yield "p", key, None if peer is None else peer.to_json()
        scored = state.model.windows_scored
        if scored != state.hst_saved and (
            now is None or now - state.hst_saved_at >= opts.hst_checkpoint_every
        ):
            state.hst_dirty = True
            state.hst_saved_at = state.hst_saved_at if now is None else now
        if state.hst_dirty:
            yield "h", "", hst_to_json(state.model.hst)
            state.hst_dirty = False
            state.hst_saved = scored

    def load(self, state: AnomalyState, kind: str, key: str, value: Any) -> None:
        if kind == "a":
            state.model.principals[key] = PrincipalState.from_json(value)
        elif kind == "p":
            state.model.peers[key] = Baseline.from_json(value)
        else:
            state.model.hst = hst_from_json(value, self.options.anomaly_settings)

    def loaded(self, state: AnomalyState) -> AnomalyState:
        principals = state.model.principals
        while len(principals) > self.options.anomaly_settings.max_principals:
            key, _ = principals.popitem(last=False)  # written before an eviction was recorded
            state.touched.add(key)
        state.hst_saved = state.model.windows_scored
        return state

    # -- input -------------------------------------------------------------------------------

    def on_events(
        self,
        state: AnomalyState,
        events: Sequence[dict[str, Any]],
        times: Sequence[float | None],
        newest: dict[str, float],
        alerts: Alerts,
    ) -> None:
        model = state.model
        observe = model.observe_at
        urgent, lazy = state.touched, state.lazy
        for event, t in zip(events, times, strict=True):
            key = principal_key(event)
            try:
                alert, changed = observe(event, t, key)
            except Exception as exc:
                self.ctx.error("anomaly", exc)
                continue
            if alert is not None:
                alerts.append(alert)
            if changed:
                urgent.add(key)  # new principal or a closed window: the baseline changed
            elif key not in urgent:
                lazy.add(key)  # only the open window's counts: checkpointed periodically
        self._score_offline(state, alerts)

    def on_tick(self, state: AnomalyState, tick: Tick, alerts: Alerts) -> None:
        model = state.model
        cfg = model.settings
        limit = tick.judged - cfg.lateness
        state.touched.update(
            k
            for k, s in model.principals.items()
            if s.stats[0] and (s.window + 1) * cfg.window <= limit  # a request in its window
        )
        try:
            alerts.extend(model.advance(tick.judged))
        except Exception as exc:
            self.ctx.error("anomaly advance", exc)
        self._score_offline(state, alerts)
        if model.windows_scored != state.hst_saved and (
            tick.now - state.hst_saved_at >= self.options.hst_checkpoint_every
        ):
            state.hst_dirty = True
            state.hst_saved_at = tick.now

    def _score_offline(self, state: AnomalyState, alerts: Alerts) -> None:
        """Alerts of the offline model for every window closed since the last call, scored
        in one batch."""
        offline = self.options.offline_model
        recorder = state.model
        if offline is None or not isinstance(recorder, RecordingAnomalyModel):
            return
        closed = recorder.take_closed()
        try:
            alerts.extend(score_windows(offline, closed, recorder.settings.window))
        except Exception as exc:
            self.ctx.error("offline model", exc)
