"""The new terms family: the packaged new terms detectors (`detections.stateful.new_terms`,
the ``new_terms:`` documents) per partition. Exact when a detector's group or term includes
``user.username`` (all shipped ones: the events topic is keyed by it); otherwise each
partition learns its own terms.

Changelog kind ``n``: one group's terms (``<id>|<cluster>|<group json>``) or a detector's
learning start in a cluster (``<id>|<cluster>|#start``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from detections.engine import Match
from detections.rule import RuleSet
from detections.stateful import new_terms as nt
from detections.stateful.new_terms import NewTermsEngine, NewTermsSpec, load_new_terms
from pipeline.stateful.family import Alerts, Dumped, Family, Tick, TrackedStore

__all__ = ["NewTerms", "NewTermsState", "packaged_new_terms"]


def packaged_new_terms(ruleset: RuleSet) -> tuple[NewTermsSpec, ...]:
    """The packaged new terms detectors whose base rules all exist in ``ruleset``.

    A custom rule set without the base rules simply has no new terms detectors.

    >>> from detections.loader import load_rules
    >>> len(packaged_new_terms(load_rules())) > 0, packaged_new_terms(load_rules([], texts={}))
    (True, ())
    """
    return tuple(s for s in load_new_terms() if all(ruleset.find(r) is not None for r in s.rules))


@dataclass
class NewTermsState:
    """One partition's groups and learning starts."""

    store: TrackedStore
    engine: NewTermsEngine
    pruned_at: float = 0.0  # wall clock of the last prune


class NewTerms(Family[NewTermsState]):
    """New terms base-rule matches recorded per group; see the module docstring."""

    name = "new_terms"
    setting = "new-terms"
    kinds: ClassVar[Mapping[str, str]] = {
        "n": "new terms group, or a detector's learning start in a cluster"
    }

    def set_rules(self, ruleset: RuleSet) -> None:
        self.ruleset = ruleset
        packaged = packaged_new_terms(ruleset)
        self.specs = packaged if self.enabled else ()
        self.ids = {s.id for s in self.specs}
        self.routed = NewTermsEngine(self.specs, ruleset).rule_ids()
        # informational base rules are held back even when the family is off
        self.held_back = frozenset(
            rule.id
            for spec in packaged
            for ref in spec.rules
            if (rule := ruleset.find(ref)) is not None and rule.level == "informational"
        )

    def rule_ids(self) -> Collection[str]:
        return self.routed

    def rules_held_back(self) -> frozenset[str]:
        return self.held_back

    # -- state -------------------------------------------------------------------------------

    def _engine(self, store: TrackedStore) -> NewTermsEngine:
        engine = NewTermsEngine(self.specs, self.ruleset, store)
        engine.recount()
        return engine

    def new_state(self, now: float) -> NewTermsState:
        store = TrackedStore()
        return NewTermsState(store, self._engine(store), pruned_at=now)

    def rebuild(self, state: NewTermsState) -> NewTermsState:
        ids = self.ids
        state.store.drop_unless(lambda k: k.split("|", 1)[0] in ids)
        state.engine = self._engine(state.store)
        return state

    def dump(self, state: NewTermsState, now: float | None) -> Iterable[Dumped]:
        return state.store.dump("n")

    def load(self, state: NewTermsState, kind: str, key: str, value: Any) -> None:
        if not key.endswith("|#start"):
            nt.check_state(value)
        state.store.data[key] = value

    # -- input -------------------------------------------------------------------------------

    def on_match(self, state: NewTermsState, match: Match, alerts: Alerts) -> None:
        try:
            alerts.extend(state.engine.process(match))
        except Exception as exc:
            self.ctx.error("new_terms", exc)

    def on_tick(self, state: NewTermsState, tick: Tick, alerts: Alerts) -> None:
        if tick.now - state.pruned_at >= self.options.prune_every:
            state.pruned_at = tick.now
            state.engine.prune(tick.judged)
