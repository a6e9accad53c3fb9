"""Alerts from every rule and every correlation of the packaged pack (for the format contract).

Rules fire on their own ``hit`` fixtures. Correlations are driven through the real
`CorrelationEngine` with their base rules' hit fixtures, repeated inside the window with a
distinct value of the counted field (value_count) and in rule order (temporal), until the
window closes.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from detections import Engine, load_rules
from detections.alert import to_alert
from detections.engine import Match
from detections.fixtures import FixtureEngines, fixture_event
from detections.loader import PACKAGED_RULES
from detections.rule import RuleSet
from detections.stateful.correlation import CorrelationEngine, CorrelationSpec
from detections.stateful.timeutil import iso

T0 = 1_795_770_000.0
REPEAT = 40


@functools.cache
def ruleset() -> RuleSet:
    """The packaged rules and correlations."""
    return load_rules([PACKAGED_RULES])


def _set(event: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    node = event
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def rule_alerts() -> dict[str, dict[str, Any]]:
    """Rule id -> the alert its first hit fixture raises (every rule of the pack)."""
    rs = ruleset()
    engines = FixtureEngines(rs)  # a test's own `lists:` (a filled-in cluster_networks)
    out: dict[str, dict[str, Any]] = {}
    for rule in rs.rules:
        for case in rule.klaxon.tests:
            if case.expect != "hit" or rule.id in out:
                continue
            event = fixture_event(case.event)
            for m in engines.for_case(case).evaluate(event):
                if m.rule.id == rule.id:
                    out[rule.id] = to_alert(m)
    return out


def _base_matches(engine: Engine, rule_ref: str, k: int, spec: CorrelationSpec) -> list[Match]:
    rs = ruleset()
    rule = rs.find(rule_ref)
    assert rule is not None, rule_ref
    field = getattr(spec.condition, "field", None)
    matches: list[Match] = []
    for case in rule.klaxon.tests:
        if case.expect != "hit":
            continue
        event = copy.deepcopy(fixture_event(case.event))
        event["auditID"] = f"{spec.id}-{rule.id}-{k}"
        event["requestReceivedTimestamp"] = event["stageTimestamp"] = iso(T0 + k)
        if field:
            _set(
                event, field, f"{event.get('objectRef', {}).get(field.rsplit('.', 1)[-1], 'v')}-{k}"
            )
        # The base rules' fixtures may name different principals: give them the group's one
        # (unless the rule then no longer matches its fixture).
        shared = copy.deepcopy(event)
        for path in spec.group_by:
            _set(shared, path, f"correlated-{spec.id[:8]}")
        for candidate in (shared, event):
            matches += [m for m in engine.evaluate(candidate) if m.rule.id == rule.id]
            if matches:
                return matches
    return matches


def correlation_alerts() -> dict[str, dict[str, Any]]:
    """Correlation id -> the first alert it raises when driven as described above."""
    rs = ruleset()
    engine = Engine(rs)
    corr = CorrelationEngine(rs)
    out: dict[str, dict[str, Any]] = {}
    for spec in corr.specs:
        fired: list[dict[str, Any]] = []
        for k in range(REPEAT):
            for i, ref in enumerate(spec.rules):
                for m in _base_matches(engine, ref, k * len(spec.rules) + i, spec):
                    fired += corr.process(m)
        fired += corr.advance(T0 + 86_400)
        for alert in fired:
            out.setdefault(alert["rule"]["id"], alert)
    return out
