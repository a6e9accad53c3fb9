"""Every fixture of every rule in the packaged pack (`detections/rules/`) behaves as declared.

Parametrized over what exists, so an empty pack passes trivially but honestly; every rule
there must carry at least one `hit` and one `miss` fixture.
"""

from __future__ import annotations

from typing import Any

import pytest

from detections import Engine, RuleLoadError, load_rules
from detections.compiler import explain
from detections.fixtures import FixtureEngines, fixture_event
from detections.loader import PACKAGED_RULES
from detections.rule import Rule, RuleSet


def _load() -> tuple[RuleSet | None, RuleLoadError | None]:
    try:
        return load_rules([PACKAGED_RULES]), None
    except RuleLoadError as exc:
        return None, exc


RULESET, ERROR = _load()
ENGINE = Engine(RULESET) if RULESET else None
ENGINES = FixtureEngines(RULESET, ENGINE) if RULESET else None
RULES: list[Rule] = list(RULESET.rules) if RULESET else []
CASES = [
    pytest.param(rule, case, id=f"{rule.file.rsplit('/', 1)[-1]}::{case.name}")
    for rule in RULES
    for case in rule.klaxon.tests
]


def test_pack_loads_without_problems() -> None:
    """The packaged rules and lists load cleanly."""
    assert ERROR is None, str(ERROR)


@pytest.mark.parametrize("rule", RULES, ids=[r.file.rsplit("/", 1)[-1] for r in RULES])
def test_rule_has_a_hit_and_a_miss(rule: Rule) -> None:
    """Each packaged rule proves both that it fires and that it stays quiet."""
    assert {t.expect for t in rule.klaxon.tests} >= {"hit", "miss"}


@pytest.mark.parametrize(("rule", "case"), CASES)
def test_fixture(rule: Rule, case: Any) -> None:
    """The full engine (index and filters included) agrees with the fixture's expectation."""
    assert ENGINES is not None
    engine = ENGINES.for_case(case)  # the pack's lists, or the test's own `lists:`
    event = fixture_event(case.event)
    hit = any(m.rule.id == rule.id for m in engine.evaluate(event))
    if hit != (case.expect == "hit"):
        pytest.fail(explain(engine.compiled_rule(rule.id), event).render())
