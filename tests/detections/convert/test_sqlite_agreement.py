"""The proof that conversion keeps a rule's meaning: for every packaged rule that converts to
the SQLite target, its query run over a table of the rule's own hit and miss fixtures selects
exactly the fixtures the engine alerts on.

Parametrized over the pack as it is (no rule count is written down); rules that cannot be
converted are checked elsewhere to carry a reason.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from detections import Engine, load_rules
from detections.convert import TARGETS, convert_ruleset
from detections.convert import fields as convert_fields
from detections.convert.converter import convert_rule
from detections.convert.sqlite import connect, make_table, run_query
from detections.convert.targets import SQLITE_TABLE
from detections.fixtures import fixture_event
from detections.loader import PACKAGED_RULES
from detections.rule import FixtureCase, Rule

RULESET = load_rules([PACKAGED_RULES])
ENGINE = Engine(RULESET)
REPORT = convert_ruleset(RULESET, "sqlite")
QUERIES = {o.id: o.query for o in REPORT.outcomes if o.kind == "rule" and o.query is not None}
CONVERTED = [r for r in RULESET.rules if r.id in QUERIES]


def outcomes(
    rule: Rule, query: str, engine: Engine, cases: Sequence[FixtureCase] | None = None
) -> list[tuple[str, bool, bool]]:
    """(fixture name, engine alerts, SQL selects) for each of the rule's fixtures."""
    cases = rule.klaxon.tests if cases is None else cases
    events = [fixture_event(case.event) for case in cases]
    conn = connect()
    make_table(conn, SQLITE_TABLE, events)
    selected = run_query(conn, SQLITE_TABLE, query)
    return [
        (case.name, any(m.rule.id == rule.id for m in engine.evaluate(event)), i in selected)
        for i, (case, event) in enumerate(zip(cases, events, strict=True))
    ]


def by_lists(rule: Rule) -> dict[Any, list[FixtureCase]]:
    """The rule's fixtures grouped by the named lists they replace (a test's ``lists:``)."""
    groups: dict[Any, list[FixtureCase]] = {}
    for case in rule.klaxon.tests:
        groups.setdefault(getattr(case, "lists", ()), []).append(case)
    return groups


def test_most_of_the_pack_converts_to_sqlite() -> None:
    """The agreement below covers most rules, not a handful (refusals are the exception)."""
    assert len(CONVERTED) >= 0.75 * len(RULESET.rules), REPORT.reasons().keys()


@pytest.mark.parametrize("rule", CONVERTED, ids=lambda r: r.file.rsplit("/", 1)[-1])
def test_sqlite_query_agrees_with_the_engine_on_the_rules_fixtures(rule: Rule) -> None:
    """Hits are selected, misses are not: the same verdict as the engine, fixture by fixture.

    Fixtures that fill in named lists (``lists:``) are run against the rule converted with
    those lists, when it converts with them."""
    results = []
    for lists, cases in by_lists(rule).items():
        if not lists:
            results += outcomes(rule, QUERIES[rule.id], ENGINE, cases)
            continue
        ruleset = replace(RULESET, lists={**RULESET.lists, **dict(lists)})
        outcome, _ = convert_rule(rule, ruleset, TARGETS["sqlite"])
        if outcome.query is not None:
            results += outcomes(rule, outcome.query, Engine(ruleset), cases)
    wrong = [(name, eng, sql) for name, eng, sql in results if eng != sql]
    assert not wrong, [f"{n}: engine {'hit' if e else 'miss'}, sql {s}" for n, e, s in wrong]
    assert results


def test_the_agreement_exercises_hits_and_misses() -> None:
    """Across the pack, both verdicts are compared, many times each."""
    verdicts = [eng for rule in CONVERTED for _, eng, _ in outcomes(rule, QUERIES[rule.id], ENGINE)]
    assert verdicts.count(True) >= len(CONVERTED) / 2
    assert verdicts.count(False) >= len(CONVERTED) / 2


def test_the_agreement_catches_a_wrong_field_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mapping that forgets where workloads keep their pod spec makes some rule disagree,
    so the agreement above can fail."""
    monkeypatch.setattr(convert_fields, "POD_SPEC_PATHS", ("requestObject.spec",))
    report = convert_ruleset(RULESET, "sqlite")
    queries: dict[str, Any] = {o.id: o.query for o in report.outcomes if o.query is not None}
    disagreements = [
        (rule.title, name)
        for rule in CONVERTED
        if rule.id in queries
        for name, eng, sql in outcomes(rule, queries[rule.id], ENGINE)
        if eng != sql
    ]
    assert disagreements


def test_a_table_of_one_pack_is_enough_for_any_rule() -> None:
    """Columns no fixture has are added as empty when a query names them."""
    conn = connect()
    make_table(conn, "t", [{"verb": "get"}])
    sql = "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM json_each(t.`user.groups`) WHERE value = 1)"
    assert run_query(conn, "t", sql) == set()


def test_source_ip_is_the_first_address_in_sqlite_as_in_the_engine() -> None:
    """`sourceIP` reads element 0 of `sourceIPs`: a proxy later in the list does not count."""
    ruleset = load_rules(
        [],
        texts={
            "r.yml": """
title: From the pod network
id: 0b0c8f9e-2a8e-4a53-9d0b-6f1d2f3f4a5b
logsource: {product: kubernetes, service: audit}
detection:
  sel: {sourceIP|cidr: 10.0.0.0/8}
  condition: sel
klaxon:
  tests:
    - {name: first is inside, expect: hit, event: {sourceIPs: [10.1.2.3, 203.0.113.9]}}
    - {name: only a later one is, expect: miss, event: {sourceIPs: [203.0.113.9, 10.1.2.3]}}
"""
        },
    )
    (rule,) = ruleset.rules
    (outcome,) = convert_ruleset(ruleset, "sqlite").outcomes
    assert outcome.query is not None
    assert outcomes(rule, outcome.query, Engine(ruleset)) == [
        ("first is inside", True, True),
        ("only a later one is", False, False),
    ]


#: Sigma features the pack may not use yet, each with events the engine decides both ways.
FEATURES = {
    "regex": ("objectRef.name|re: '^web-[0-9]+$'", ["web-0", "Web-1", "web-x", "api-0"]),
    "cased": ("objectRef.name|cased: Web-0", ["Web-0", "web-0"]),
    "case-insensitive": ("objectRef.name: WEB-0", ["web-0", "web-1"]),
    "wildcards": ("objectRef.name: 'w?b-*'", ["web-0", "wab-12", "wb-0"]),
    "contains all": ("objectRef.name|contains|all: [eb, '-0']", ["web-0", "web-1", "x-0"]),
    "startswith list": ("objectRef.name|startswith: [web, api]", ["web-0", "api-1", "db-0"]),
    "endswith": ("objectRef.name|endswith: '-0'", ["web-0", "web-10", "web-1"]),
    "null": ("objectRef.name: null", ["web-0", None]),
    "not exists": ("objectRef.name|exists: false", ["web-0", None]),
    "number compare": ("responseStatus.code|gte: 400", [200, 403, 500]),
    "number equal": ("responseStatus.code: [401, 403]", [401, 200]),
    "boolean": ("requestObject.spec.hostNetwork: true", [True, False]),
    "cidr v4 and v6": (
        "sourceIPs|cidr: [10.0.0.0/8, 'fd00::/8']",
        [["10.2.3.4"], ["fd12::1"], ["192.168.0.1"], ["8.8.8.8", "10.0.0.1"]],
    ),
    "list element": ("user.groups: system:masters", [["a", "system:masters"], ["a"]]),
    "base64offset": ("requestURI|base64offset|contains: curl", ["Y3VybA==", "xY3VybA", "curl"]),
}


def _feature_rule(item: str) -> str:
    return f"""
title: Feature
id: 0b0c8f9e-2a8e-4a53-9d0b-6f1d2f3f4a5b
logsource: {{product: kubernetes, service: audit}}
detection:
  sel: {{{item}}}
  condition: sel
"""


def _feature_event(item: str, value: Any) -> dict[str, Any]:
    path = item.split("|")[0].split(":")[0]
    event: dict[str, Any] = fixture_event({})
    node = event
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return event


@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_sigma_features_agree_with_the_engine(feature: str) -> None:
    """Each Sigma feature, converted for SQLite, decides like the engine on every event."""
    item, values = FEATURES[feature]
    ruleset = load_rules([], texts={"r.yml": _feature_rule(item)})
    (outcome,) = convert_ruleset(ruleset, "sqlite").outcomes
    assert outcome.query is not None, outcome.reason
    events = [_feature_event(item, v) for v in values]
    conn = connect()
    make_table(conn, SQLITE_TABLE, events)
    selected = run_query(conn, SQLITE_TABLE, outcome.query)
    engine = Engine(ruleset)
    verdicts = [
        (v, bool(engine.evaluate(e)), i in selected)
        for i, (v, e) in enumerate(zip(values, events, strict=True))
    ]
    assert all(eng == sql for _, eng, sql in verdicts), verdicts
    assert {eng for _, eng, _ in verdicts} == {True, False}, verdicts


def test_sqlite_correlation_queries_run_over_the_leaves_table() -> None:
    """Every correlation converted for SQLite is valid SQL over a table of the pack's hit
    fixtures (what it counts is pySigma's; see docs/convert.md). `temporal_ordered` uses
    GROUP_CONCAT(… ORDER BY …), which needs SQLite 3.44."""
    queries = [o.query for o in REPORT.outcomes if o.kind == "correlation" and o.query]
    assert queries
    if sqlite3.sqlite_version_info < (3, 44):
        queries = [q for q in queries if "GROUP_CONCAT(sigma_rule_id ORDER BY" not in q]
    events = [
        fixture_event(c.event) for r in RULESET.rules for c in r.klaxon.tests if c.expect == "hit"
    ]
    conn = connect()
    make_table(conn, SQLITE_TABLE, events)
    for query in queries:
        while True:
            try:
                rows = conn.execute(query).fetchall()
                break
            except sqlite3.OperationalError as exc:
                missing = str(exc).partition("no such column: ")[2]
                assert missing, (str(exc), query[:200])
                conn.execute(f"ALTER TABLE {SQLITE_TABLE} ADD COLUMN `{missing}`")
        assert isinstance(rows, list)
