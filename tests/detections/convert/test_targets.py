"""Conversion of the whole pack for every target, the field mapping, and the Sigma documents."""

from __future__ import annotations

import re

import pytest

from detections import load_rules
from detections.condition import Ref
from detections.convert import TARGETS, convert_ruleset, to_sigma
from detections.convert.fields import (
    MAPPED,
    crossed_lists,
    list_prefixes,
    no_raw_equivalent,
    raw_paths,
)
from detections.convert.sigma import NotConvertible
from detections.convert.sqlite import connect, make_table, run_query
from detections.convert.targets import SQLITE_TABLE, kusto_name, splunk_name
from detections.fields import DERIVED
from detections.fixtures import fixture_event
from detections.loader import PACKAGED_RULES
from detections.rule import FieldMatch, Rule, RuleSet, Selection

RULESET = load_rules([PACKAGED_RULES])

#: The kinds of reason a packaged rule (not a correlation) may be refused for.
RULE_REASONS = (
    "no raw equivalent",
    "the kusto target does not search inside lists",
    "never matches as configured",
    "Klaxon-only modifier",
)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_the_whole_pack_converts_without_exceptions(target: str) -> None:
    """Every rule and correlation gets a query or a reason; rules are refused only for a
    documented limit (a pySigma error on a rule would be a bug in the mapping)."""
    report = convert_ruleset(RULESET, target)
    assert len(report.outcomes) == len(RULESET.rules) + len(RULESET.correlations)
    assert report.converted
    for o in report.outcomes:
        assert (o.query is None) != (o.reason is None), o
        if o.kind == "rule" and o.reason is not None:
            assert o.reason.startswith(RULE_REASONS), (o.title, o.reason)


def test_splunk_and_elasticsearch_refuse_rules_only_for_what_no_query_can_say() -> None:
    """Splunk and Elasticsearch search lists, so a rule is refused only for a derived field
    without a raw equivalent, a Klaxon-only comparison, or lists left empty."""
    allowed = ("no raw equivalent", "Klaxon-only modifier", "never matches as configured")
    for target in ("splunk", "elasticsearch"):
        refused = convert_ruleset(RULESET, target).refused
        rules = [o for o in refused if o.kind == "rule"]
        assert all(o.reason and o.reason.startswith(allowed) for o in rules)


def test_kusto_queries_read_the_aks_audit_table() -> None:
    """Kusto queries start from AKSAudit and use its columns."""
    report = convert_ruleset(RULESET, "kusto")
    assert all(o.query.startswith("AKSAudit\n| where ") for o in report.converted if o.query)
    assert any("ObjectRef.resource" in (o.query or "") for o in report.converted)


def test_list_paths_are_known_wherever_fixtures_cross_a_list() -> None:
    """Every list a rule's fixtures cross on a tested raw path is one `list_prefixes` names, so
    Splunk's `{}` names and Kusto's refusals are right for the pack."""
    missing = set()
    for rule in RULESET.rules:
        paths = {
            p
            for s in rule.detection.values()
            for alternative in s.alternatives
            for fm in alternative
            for p in raw_paths(fm.path)
        }
        for case in rule.klaxon.tests:
            event = fixture_event(case.event)
            for path in paths:
                missing |= {(path, c) for c in crossed_lists(event, path)} - {
                    (path, c) for c in list_prefixes(path)
                }
    assert not missing


def test_field_names_per_target() -> None:
    """Splunk marks lists with {}, Kusto maps to AKSAudit columns and dynamic members."""
    assert splunk_name("user.groups") == "user.groups{}"
    assert splunk_name("requestObject.op") == "requestObject{}.op"
    assert splunk_name("requestObject.data.tls.key") == "requestObject.data.tls.key"
    assert kusto_name("sourceIP") == "tostring(SourceIps[0])"
    assert kusto_name("requestObject.metadata.labels.app.kubernetes.io/name") == (
        "RequestObject.metadata.labels['app.kubernetes.io/name']"
    )


def test_derived_fields_map_to_raw_paths() -> None:
    """podSpec fans out over the places a pod spec lives; decision is an annotation."""
    assert len(raw_paths("podSpec.allContainers.image")) == 12
    assert raw_paths("authzReason") == ("annotations.authorization.k8s.io/reason",)


RULE = """
title: Exec
id: 0b0c8f9e-2a8e-4a53-9d0b-6f1d2f3f4a5b
logsource: {product: kubernetes, service: audit}
detection:
  sel: {EXTRA verb: create, response.success: true}
  x_a: {objectRef.subresource: exec}
  x_b: {objectRef.namespace: kube-system}
  x_c: {hostPath|exists: true}
  condition: CONDITION
"""


def rules(condition: str = "sel and x_a", extra: str = "") -> RuleSet:
    """The loaded rule set of RULE with its condition and extra items of `sel`."""
    return load_rules(
        [], texts={"r.yml": RULE.replace("CONDITION", condition).replace("EXTRA", extra)}
    )


def test_sigma_document_resolves_aliases_and_quantifiers() -> None:
    """Aliases become canonical paths; `2 of` becomes an OR of ANDs."""
    rs = rules("sel and 2 of x_*")
    doc = to_sigma(rs.rules[0], (), rs.lists)
    detection = doc["detection"]
    assert detection["x_c"] == {"podSpec.volumes.hostPath.path|exists": True}
    assert detection["condition"] == "sel and ((x_a and x_b) or (x_a and x_c) or (x_b and x_c))"


def test_response_success_becomes_a_status_code_comparison() -> None:
    """`response.success: true` is `responseStatus.code < 400` in every target."""
    rs = rules()
    splunk = convert_ruleset(rs, "splunk").outcomes[0].query
    lucene = convert_ruleset(rs, "elasticsearch").outcomes[0].query
    assert splunk == 'verb="create" responseStatus.code<400 objectRef.subresource="exec"'
    assert lucene is not None and "responseStatus.code:<400" in lucene


def test_a_rule_whose_only_selection_is_an_empty_list_is_refused() -> None:
    """The engine compiles an empty named list to "never"; so does the conversion."""
    rs = rules(extra="user.username|expand: '%system_principals%',")
    with pytest.raises(NotConvertible, match="'system_principals' are empty"):
        to_sigma(rs.rules[0], (), {"system_principals": ()})


def test_an_allow_list_that_is_empty_folds_away() -> None:
    """`sel and not trusted` with an empty `trusted` list converts as `sel`."""
    rs = rules("sel and not x_a")
    doc = to_sigma(rs.rules[0], (), {})
    assert doc["detection"]["condition"] == "sel and not x_a"
    rs = load_rules(
        [],
        texts={
            "r.yml": RULE.replace("CONDITION", "sel and not x_b")
            .replace("EXTRA", "")
            .replace(
                "objectRef.namespace: kube-system", "user.username|expand: '%system_principals%'"
            )
        },
    )
    doc = to_sigma(rs.rules[0], (), {"system_principals": ()})
    assert doc["detection"]["condition"] == "sel"


def test_commands_have_no_raw_equivalent() -> None:
    """An exec command rule is refused with the reason, in every target."""
    rs = rules(extra="commandLine|contains: cat,")
    for target in TARGETS:
        (o,) = convert_ruleset(rs, target).outcomes
        assert o.reason is not None and "URL-encoded" in o.reason


def test_every_derived_field_is_mapped_or_has_a_reason() -> None:
    """A derived field the engine gains is either rewritten or refused with its own reason
    (never passed to a SIEM under a name its events do not have)."""
    for name in DERIVED:
        reason = no_raw_equivalent(name)
        assert name in MAPPED or (reason is not None and "no raw mapping yet" not in reason), (
            f"derived field {name!r}: map it in detections/convert/fields.py (RENAMED, "
            "raw_paths) or say why it has no raw equivalent (NO_RAW_EQUIVALENT)"
        )


def _rule(*items: FieldMatch) -> Rule:
    """A rule with one selection of ``items`` (for modifiers the loader of this tree lacks)."""
    return Rule(
        "r", "0b0c8f9e-2a8e-4a53-9d0b-6f1d2f3f4a5b",
        {"sel": Selection("sel", (items,))}, Ref("sel"), "sel", "r.yml",
    )  # fmt: skip


def _match(key: str, *values: object) -> FieldMatch:
    field, *mods = key.split("|")
    return FieldMatch(key, field, field, tuple(mods), values)


def test_a_klaxon_only_modifier_is_refused() -> None:
    """A modifier Sigma does not have makes the rule unconvertible, saying which."""
    rule = _rule(_match("verb|nearby", "get"))
    with pytest.raises(NotConvertible, match=re.escape("Klaxon-only modifier: 'verb|nearby'")):
        to_sigma(rule, (), {})


def test_outside_over_one_value_is_exists_and_not() -> None:
    """`user.username|outside: [a, b]`: the name exists and is neither."""
    doc = to_sigma(
        _rule(_match("verb", "create"), _match("user.username|outside", "a", "b")), (), {}
    )
    assert doc["detection"] == {
        "sel_0": {"verb": "create", "user.username|exists": True},
        "sel_0_in0": {"user.username": ["a", "b"]},
        "condition": "sel_0 and not sel_0_in0",
    }


def test_outside_over_a_list_converts_for_sqlite_only() -> None:
    """`sourceIPs|cidr|outside`: some address in no range; SQLite tests elements one by one,
    Splunk and Elasticsearch refuse it."""
    rule = _rule(
        _match("verb", "create"), _match("sourceIPs|cidr|outside", "10.0.0.0/8", "::1/128")
    )
    rs = RuleSet((rule,))
    for target in ("splunk", "elasticsearch", "kusto"):
        (o,) = convert_ruleset(rs, target).outcomes
        assert o.reason is not None and o.reason.startswith("Klaxon-only modifier"), o.reason
    (o,) = convert_ruleset(rs, "sqlite").outcomes
    assert o.query is not None
    events = {
        "all inside": ["10.1.2.3", "::1"],
        "one outside": ["10.1.2.3", "203.0.113.9"],
        "none": [],
        "not an address": ["proxy"],
    }
    conn = connect()
    make_table(conn, SQLITE_TABLE, [{"verb": "create", "sourceIPs": v} for v in events.values()])
    selected = run_query(conn, SQLITE_TABLE, o.query)
    assert {name for i, name in enumerate(events) if i in selected} == {
        "one outside",
        "not an address",
    }
