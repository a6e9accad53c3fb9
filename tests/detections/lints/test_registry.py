"""The lint registry: one function per lint code, positioned findings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from detections import load_rules
from detections.lints import registry
from detections.lints.base import Context, Finding, Subject

RULE = (
    "title: t\nid: 5b6c7d8e-0000-4000-8000-000000000001\nlevel: low\n"
    "tags: [attack.execution, attack.t1609]\n"
    "detection:\n  s: {verb: create}\n  condition: s\n"
)


def shouting_title(subject: Subject, context: Context) -> Iterator[Finding]:
    """A toy lint: the title is written in capitals."""
    if subject.kind == "rule" and subject.doc.value["title"].isupper():
        yield ("title",), "title is in capitals", subject.doc.value["title"].capitalize()


def test_a_registered_lint_runs_with_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering a function is all it takes; findings carry line:col and the code."""
    monkeypatch.setitem(registry.LINTS, "shouting", shouting_title)
    ruleset = load_rules([], texts={"r.yml": RULE.replace("title: t", "title: EXEC")})
    assert [str(lint) for lint in ruleset.lints] == [
        "r.yml:1:1: title: title is in capitals (did you mean 'Exec'?) [shouting]"
    ]


def test_lints_of_every_document_kind_come_from_the_registry() -> None:
    """Rules, filters and correlations are linted by the same registered functions."""
    flt = "title: f\nfilter:\n  rules: [r]\n  x: {verb: delete}\n  condition: not x\n"
    corr = (
        "title: c\ntags: [attack.t9999]\ncorrelation:\n  type: event_count\n  rules: [r]\n"
        "  group-by: [user.username]\n  timespan: 5m\n  condition: {gte: 2}\n"
    )
    rule = RULE.replace("level: low\n", "level: low\nname: r\n")
    ruleset = load_rules([], texts={"r.yml": rule, "f.yml": flt, "c.yml": corr})
    found = {(lint.file, lint.code) for lint in ruleset.lints}
    assert found == {("f.yml", "dead-filter"), ("c.yml", "attack-tag")}
    assert {code for _, code in found} <= set(registry.LINTS)
