"""Stateful detections, pure core: correlations, new terms, anomalies, silent clusters.

Nothing here knows Kafka, asyncio or the wall clock: every decision uses event time, state is
small JSON values keyed by group (a dict or a Faust table), and every detector is a pure
``step(state, observation) -> (new_state, alerts)`` plus an ``advance``/``check`` for timers.
See ``docs/stateful.md`` for the exact semantics.

>>> from detections import load_rules
>>> rs = load_rules()
>>> sorted(suppressed_rule_ids(rs, load_new_terms(ruleset=rs)))[:1]
['0d2f4b6d-8e0a-4c2e-b4d6-5f7b9d1f3a7f']
"""

from __future__ import annotations

from collections.abc import Iterable

from schemas.native import extend

__path__ = extend(__name__, __path__)  # compiled modules first, when current

from detections.rule import RuleSet
from detections.stateful.anomaly import AnomalyModel, AnomalySettings
from detections.stateful.correlation import (
    CorrelationEngine,
    CorrelationSpec,
    Settings,
    generated_rule_ids,
)
from detections.stateful.errors import (
    ModelFormatError,
    StateFormatError,
    StatefulError,
    TrainingError,
    UnsupportedCorrelation,
)
from detections.stateful.new_terms import NewTermsEngine, NewTermsSpec, load_new_terms


def suppressed_rule_ids(ruleset: RuleSet, new_terms: Iterable[NewTermsSpec] = ()) -> frozenset[str]:
    """Base rules whose matches should not become alerts on their own.

    Rules referenced only by correlations with ``generate: false`` (Sigma semantics), plus
    informational base rules consumed by new terms detectors.
    """
    out = set(CorrelationEngine(ruleset).suppressed_rules())
    for spec in new_terms:
        for ref in spec.rules:
            rule = ruleset.find(ref)
            if rule is not None and rule.level == "informational":
                out.add(rule.id)
    return frozenset(out - generated_rule_ids(ruleset))


__all__ = [
    "AnomalyModel",
    "AnomalySettings",
    "CorrelationEngine",
    "CorrelationSpec",
    "ModelFormatError",
    "NewTermsEngine",
    "NewTermsSpec",
    "Settings",
    "StateFormatError",
    "StatefulError",
    "TrainingError",
    "UnsupportedCorrelation",
    "generated_rule_ids",
    "load_new_terms",
    "suppressed_rule_ids",
]
