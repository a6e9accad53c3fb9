"""Lints: rules that load but are probably wrong are reported with a code and a position."""

from __future__ import annotations

import pytest

from detections import load_rules
from detections.errors import Lint, Problem
from detections.lists import load_lists
from detections.loader import _Builder

HEAD = (
    "title: t\nid: 5b6c7d8e-0000-4000-8000-000000000001\nlevel: low\n"
    "tags: [attack.execution, attack.t1609]\n"
)


def lints(text: str) -> list[str]:
    """Rendered lints of one rule document."""
    return [str(lint) for lint in load_rules([], texts={"r.yml": text}).lints]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "detection:\n  s: {objectRef.resourse: pods}\n  condition: s\n",
            "r.yml:6:7: detection.s.objectRef.resourse: field 'objectRef.resourse' is not in the "
            "audit event schema (did you mean 'objectRef.resource'?) [unknown-field]",
        ),
        (
            "detection:\n  s: {apiGroup: apps}\n  condition: s\n",
            "r.yml:6:7: detection.s.apiGroup: 'apiGroup' is an alias; it is read from "
            "objectRef.apiGroup (did you mean 'objectRef.apiGroup'?) [alias]",
        ),
        (
            "detection:\n  s:\n    responseStatus.code: ALLOW\n  condition: s\n",
            "r.yml:7:5: detection.s.responseStatus.code: responseStatus.code is a number; 'ALLOW' "
            "can never match (the authorization decision is the derived field 'decision') "
            "(did you mean 'decision: allow'?) [never-matches]",
        ),
        (
            "detection:\n  s: {verb: create}\n  f: {verb: delete}\n  condition: s and not f\n",
            "r.yml:7:3: detection.f: 'f' can never match when the rest of the condition does "
            "(they require different verb values), so excluding it does nothing [dead-filter]",
        ),
        (
            "detection:\n  sel_a: {verb: create}\n  sel_b: {verb: patch}\n"
            "  condition: sel_a and 1 of sel_*\n",
            "r.yml:8:3: detection.condition: 'sel_a' is required on its own and also counts "
            "towards a quantifier over sel_a, sel_b, which it therefore always satisfies "
            "[redundant-quantifier]",
        ),
        (
            "detection:\n  s: {verb: create}\n  spare: {verb: get}\n  condition: s\n",
            "r.yml:7:3: detection.spare: selection 'spare' is not used by the condition "
            "[unused-selection]",
        ),
        (
            "logsource: {product: windows}\ndetection:\n  s: {verb: create}\n  condition: s\n",
            "r.yml:5:1: logsource: logsource is not {product: kubernetes, service: audit} "
            "[logsource]",
        ),
    ],
)
def test_lint(body: str, expected: str) -> None:
    """Each probably-wrong construct produces exactly its lint."""
    assert lints(HEAD + body) == [expected]


def test_attack_tags_are_checked_against_the_catalogue() -> None:
    """A missing technique tag and an unknown technique are both reported."""
    text = "title: t\nid: 5b6c7d8e-0000-4000-8000-000000000001\nlevel: low\ntags: [attack.t9999]\n"
    text += "detection:\n  s: {verb: create}\n  condition: s\n"
    found = lints(text)
    assert found == [
        "r.yml:4:8: tags[0]: unknown ATT&CK technique 'T9999' (not in bundled ATT&CK v18.1) "
        "[attack-tag]"
    ]
    no_tags = lints(
        "title: t\nid: 5b6c7d8e-0000-4000-8000-000000000001\nlevel: low\n"
        "detection:\n  s: {verb: create}\n  condition: s\n"
    )
    assert [lint.split(" [")[-1] for lint in no_tags] == ["no-attack]"]


def test_missing_level_is_linted_and_alerts_default_to_medium() -> None:
    """Sigma allows omitting level; we lint it."""
    text = "title: t\nid: 5b6c7d8e-0000-4000-8000-000000000001\ntags: [attack.t1609]\n"
    text += "detection:\n  s: {verb: create}\n  condition: s\n"
    assert [lint.rsplit("[", 1)[-1] for lint in lints(text)] == ["no-level]"]


def test_packaged_rules_need_a_hit_and_a_miss() -> None:
    """Only rules in the packaged folder must carry fixtures."""
    problems: list[Problem] = []
    builder = _Builder(load_lists(), problems)
    builder.add_file(
        "detections/rules/x.yml", HEAD + "detection:\n  s: {verb: create}\n  condition: s\n", True
    )
    ruleset = builder.finish()
    assert not problems
    assert [(lint.code, lint.key_path) for lint in ruleset.lints if isinstance(lint, Lint)] == [
        ("no-tests", "klaxon")
    ]


def test_filter_document_that_can_never_apply() -> None:
    """A meta-filter whose selection contradicts the rule's verb is linted."""
    rule = HEAD + "name: r\ndetection:\n  s: {verb: create}\n  condition: s\n"
    flt = "title: f\nfilter:\n  rules: [r]\n  x: {verb: delete}\n  condition: not x\n"
    ruleset = load_rules([], texts={"r.yml": rule, "f.yml": flt})
    assert [str(lint) for lint in ruleset.lints] == [
        "f.yml:2:1: filter: filter can never apply to 't' (they require different verb values) "
        "[dead-filter]"
    ]
