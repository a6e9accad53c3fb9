"""The correlations family: Sigma correlations (`detections.stateful.correlation`) per
partition, re-keyed to the by-group topic when their group is not co-partitioned.

Changelog kind ``c``: one correlation group, key ``<correlation id>|<cluster>|<group json>``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from detections.engine import Match
from detections.fields import resolve_alias
from detections.rule import RuleSet
from detections.stateful import correlation as corr
from detections.stateful.correlation import CorrelationEngine, CorrelationSpec
from detections.stateful.timeutil import event_time
from pipeline.stateful.family import Alerts, Dumped, Family, Tick, TrackedStore

__all__ = ["PRINCIPAL_FIELD", "CorrelationState", "Correlations", "co_partitioned"]

#: The routing field of the events topic (besides the cluster).
PRINCIPAL_FIELD = "user.username"


def co_partitioned(group_by: Sequence[str]) -> bool:
    """Whether a group (always per cluster) lies within one ``cluster|user`` partition.

    >>> co_partitioned(["user.username"]), co_partitioned(["sourceIP"]), co_partitioned([])
    (True, False, False)
    """
    return PRINCIPAL_FIELD in {resolve_alias(f) for f in group_by}


@dataclass
class CorrelationState:
    """One partition's correlation groups, and re-keyed observations not yet sent."""

    store: TrackedStore
    engine: CorrelationEngine
    #: by-group partition -> ``[correlation id, rule position, event]`` items
    outbox: dict[int, list[list[Any]]] = field(default_factory=dict)


class Correlations(Family[CorrelationState]):
    """Correlation base-rule matches counted per group; see the module docstring."""

    name = "correlations"
    setting = "correlations"
    kinds: ClassVar[Mapping[str, str]] = {"c": "correlation group"}
    rekey_field = "matches"
    rekey_empty: ClassVar[list[Any]] = []

    def set_rules(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        probe = CorrelationEngine(ruleset, self.options.correlation)
        self.specs = probe.specs if self.enabled else ()
        self.by_id = {s.id: s for s in self.specs}
        #: correlations whose groups lie within one events partition (not re-keyed)
        self.local = {s.id for s in self.specs if co_partitioned(s.group_by)}
        self.targets: dict[str, list[tuple[CorrelationSpec, int]]] = {}
        for rule in ruleset.rules:
            pairs = [(s, i) for s, i in probe.rule_targets(rule.id) if s.id in self.by_id]
            if pairs:
                self.targets[rule.id] = pairs
        self.held_back = probe.suppressed_rules()
        self.published = corr.generated_rule_ids(ruleset)

    def rule_ids(self) -> Collection[str]:
        return self.targets.keys()

    def rules_held_back(self) -> frozenset[str]:
        return self.held_back

    def rules_published(self) -> frozenset[str]:
        return self.published

    # -- state -------------------------------------------------------------------------------

    def _engine(self, store: TrackedStore) -> CorrelationEngine:
        return CorrelationEngine(self.ruleset, self.options.correlation, store, specs=self.specs)

    def new_state(self, now: float) -> CorrelationState:
        store = TrackedStore()
        return CorrelationState(store, self._engine(store))

    def rebuild(self, state: CorrelationState) -> CorrelationState:
        by_id = self.by_id
        state.store.drop_unless(lambda k: k.split("|", 1)[0] in by_id)
        return CorrelationState(state.store, self._engine(state.store), state.outbox)

    def dump(self, state: CorrelationState, now: float | None) -> Iterable[Dumped]:
        return state.store.dump("c")

    def load(self, state: CorrelationState, kind: str, key: str, value: Any) -> None:
        state.store.data[key] = corr.check_state(value)

    # -- input -------------------------------------------------------------------------------

    def on_match(self, state: CorrelationState, match: Match, alerts: Alerts) -> None:
        engine = state.engine
        store = state.store
        event = match.event
        t = event_time(event)
        for spec, idx in self.targets[match.rule.id]:
            try:
                obs = corr.observe_at(spec, idx, event, t)
                if obs is None:
                    engine.unusable += 1
                    continue
                if spec.id not in self.local:
                    dest = self.ctx.owner(obs.key)
                    state.outbox.setdefault(dest, []).append([spec.id, idx, event])
                    continue
                group, fired = corr.step(
                    spec, store.get(obs.key), obs, self.options.correlation, copy=False
                )
                store[obs.key] = group
                alerts.extend(fired)
            except Exception as exc:
                self.ctx.error("correlation", exc)

    def take_rekeyed(self, state: CorrelationState) -> dict[int, Any]:
        out, state.outbox = state.outbox, {}
        return out

    def rekey_key(self, payload: Any) -> str:
        return str(payload[0][0])

    def on_rekeyed(self, state: CorrelationState, payload: Any, alerts: Alerts) -> float | None:
        engine = state.engine
        store = state.store
        newest: float | None = None
        for item in payload or []:
            try:
                spec = self.by_id.get(item[0])
                if spec is None:  # removed by a reload since it was sent
                    continue
                obs = corr.observe(spec, int(item[1]), item[2])
                if obs is None:
                    engine.unusable += 1
                    continue
                if newest is None or obs.time > newest:
                    newest = obs.time
                group, fired = corr.step(
                    spec, store.get(obs.key), obs, self.options.correlation, copy=False
                )
                store[obs.key] = group
                alerts.extend(fired)
            except Exception as exc:
                self.ctx.error("correlation", exc)
        return newest

    def on_tick(self, state: CorrelationState, tick: Tick, alerts: Alerts) -> None:
        try:
            alerts.extend(state.engine.advance(tick.judged))
        except Exception as exc:
            self.ctx.error("correlation advance", exc)
