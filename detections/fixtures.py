"""Rule test fixtures: a realistic benign base event, deep merge, and a fixture runner.

Each ``klaxon.tests`` case is a *partial* event deep-merged over :data:`BASE_EVENT`, so a
fixture only states what matters to the rule:

>>> ev = fixture_event({"verb": "create", "objectRef": {"subresource": "exec"}})
>>> ev["verb"], ev["objectRef"]["resource"], ev["objectRef"]["subresource"], ev["user"]["username"]
('create', 'pods', 'exec', 'alice')
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from detections.compiler import Explanation
from detections.engine import Engine
from detections.rule import FixtureCase, Rule, RuleSet

#: alice runs `kubectl get pod web-0 -n shop`; the API server allows it (ResponseComplete, 200).
BASE_EVENT: dict[str, Any] = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "level": "Metadata",
    "auditID": "5e0f3c4e-8a51-4b0b-9d7e-2f5b8c1d6a10",
    "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/shop/pods/web-0",
    "verb": "get",
    "user": {
        "username": "alice",
        "uid": "c1a1f5d2-3b4c-4d5e-8f90-a1b2c3d4e5f6",
        "groups": ["developers", "system:authenticated"],
    },
    "sourceIPs": ["10.20.30.40"],
    "userAgent": "kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46",
    "objectRef": {
        "resource": "pods",
        "namespace": "shop",
        "name": "web-0",
        "apiVersion": "v1",
    },
    "responseStatus": {"metadata": {}, "code": 200},
    "requestReceivedTimestamp": "2026-11-27T09:15:02.104526Z",
    "stageTimestamp": "2026-11-27T09:15:02.109874Z",
    "annotations": {
        "authorization.k8s.io/decision": "allow",
        "authorization.k8s.io/reason": (
            'RBAC: allowed by RoleBinding "developers/shop" of ClusterRole "view" to Group '
            '"developers"'
        ),
    },
    "cluster": "default",
}


def deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict: ``patch`` over ``base``; nested mappings merge, everything else replaces.

    >>> deep_merge({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"c": 3}, "l": [2]})
    {'a': {'b': 1, 'c': 3}, 'l': [2]}
    """
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def fixture_event(partial: Mapping[str, Any]) -> dict[str, Any]:
    """``partial`` merged over :data:`BASE_EVENT`."""
    return deep_merge(BASE_EVENT, partial)


@dataclass(frozen=True, slots=True)
class FixtureFailure:
    """A fixture whose outcome differs from its ``expect``."""

    rule: Rule
    test: str
    expect: str
    explanation: Explanation

    def render(self) -> str:
        """One header line plus the field-by-field explanation."""
        got = "hit" if self.explanation.matched else "miss"
        failed = self.explanation.failed_selections()
        why = f"; selections not matched: {', '.join(failed)}" if failed else ""
        head = (
            f"{self.rule.file}: {self.rule.title}: test '{self.test}' expected {self.expect}, "
            f"got {got}{why}"
        )
        body = "\n".join("    " + line for line in self.explanation.render().splitlines())
        return f"{head}\n{body}"


@dataclass(frozen=True, slots=True)
class FixtureReport:
    """Totals and failures of one fixture run."""

    rules: int
    cases: int
    failures: tuple[FixtureFailure, ...]

    @property
    def ok(self) -> bool:
        """True when every fixture behaved as expected."""
        return not self.failures


class FixtureEngines:
    """The engine a fixture runs on: the ruleset's own, or one compiled with the test's
    ``lists:`` (a filled-in ``cluster_networks``, a policy list) replacing the named lists;
    one engine per distinct set of replacements."""

    def __init__(self, ruleset: RuleSet, engine: Engine | None = None) -> None:
        self.ruleset = ruleset
        self._engines: dict[tuple[tuple[str, tuple[Any, ...]], ...], Engine] = {
            (): engine or Engine(ruleset)
        }

    def for_case(self, case: FixtureCase) -> Engine:
        """The engine for ``case``."""
        found = self._engines.get(case.lists)
        if found is None:
            lists = {**self.ruleset.lists, **dict(case.lists)}
            found = self._engines[case.lists] = Engine(replace(self.ruleset, lists=lists))
        return found


def run_fixtures(ruleset: RuleSet, engine: Engine | None = None) -> FixtureReport:
    """Run every rule's fixtures through the engine (so filters and the index are exercised)."""
    engines = FixtureEngines(ruleset, engine)
    failures: list[FixtureFailure] = []
    cases = 0
    for rule in ruleset.rules:
        for case in rule.klaxon.tests:
            cases += 1
            event = fixture_event(case.event)
            case_engine = engines.for_case(case)
            hit = any(m.rule.id == rule.id for m in case_engine.evaluate(event))
            if hit != (case.expect == "hit"):
                from detections.compiler import explain

                compiled = case_engine.compiled_rule(rule.id)
                failures.append(
                    FixtureFailure(rule, case.name, case.expect, explain(compiled, event))
                )
    return FixtureReport(len(ruleset.rules), cases, tuple(failures))
