"""Rule selection: which rules run, decided by id, tag, level and status selectors."""

from __future__ import annotations

import dataclasses

import pytest

from detections import load_rules
from detections.loader import PACKAGED_RULES
from detections.selection import RuleSelection, Selector

PACK = load_rules([PACKAGED_RULES])
EXEC_BASE = "9a0c2e4a-6b8d-4f1b-a3c5-7d9f1b3d5e49"  # pod-exec, read by exec-across-pods


def test_the_empty_selection_keeps_every_rule_of_the_pack() -> None:
    """The pack has no deprecated or unsupported rule: nothing is off by default."""
    selected = RuleSelection().apply(PACK)
    assert selected.disabled == 0
    assert selected.ruleset.rules == PACK.rules
    assert selected.ruleset.correlations == PACK.correlations


def test_disable_by_level_tag_status_and_id() -> None:
    """Each selector kind removes exactly the rules it names, and says so."""
    some = PACK.rules[0]
    cases = {
        "level:high": lambda r: r.level == "high",
        "tag:attack.t1611": lambda r: "attack.t1611" in r.tags,
        "status:experimental": lambda r: r.status == "experimental",
        f"id:{some.id}": lambda r: r.id == some.id,
    }
    for selector, named in cases.items():
        selected = RuleSelection.parse(disable=[selector]).apply(PACK)
        off = {r.id for r in PACK.rules if named(r)} - selected.feeding
        assert off, selector
        kept = {r.id for r in selected.ruleset.rules}
        assert not off & kept, selector
        assert {r.id for r in PACK.rules} - off <= kept, selector
        assert all(selected.decisions[i].reason.startswith(f"disabled by {selector}") for i in off)


def test_rules_are_named_by_id_name_or_file_stem() -> None:
    """`id:` accepts what `klaxon rules explain` accepts: id, name, file stem."""
    for key in (EXEC_BASE, "pod-exec"):
        rule = next(r for r in PACK.rules if r.id == EXEC_BASE)
        assert Selector.parse(f"id:{key}").matches(rule, rule.status)
    stem = PACK.rules[0].file.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    assert Selector.parse(stem).matches(PACK.rules[0], None)


def test_deprecated_and_unsupported_rules_are_off_unless_enabled() -> None:
    """Sigma's advice: deprecated and unsupported rules do not run by default."""
    rule = PACK.rules[0]
    for status in ("deprecated", "unsupported"):
        old = dataclasses.replace(rule, status=status)
        decision = RuleSelection().decide(old)
        assert decision.enabled is False and decision.reason == f"status {status} (off by default)"
        assert RuleSelection.parse(enable=[f"id:{rule.id}"]).decide(old).enabled is True


def test_enable_wins_over_disable() -> None:
    """Disable all low rules but keep one: the enable selector decides."""
    low = next(r for r in PACK.rules if r.level == "low")
    sel = RuleSelection.parse(disable=["level:low"], enable=[f"id:{low.id}"])
    assert sel.decide(low).enabled is True
    assert low in sel.apply(PACK).ruleset.rules


def test_a_disabled_base_rule_still_feeds_its_enabled_correlation() -> None:
    """Disabling pod-exec does not silently break exec-across-pods: the rule stays in the
    engine for the correlation, and the decision says so; disabling both removes both."""
    selected = RuleSelection.parse(disable=["id:pod-exec"]).apply(PACK)
    assert EXEC_BASE in selected.feeding
    assert any(r.id == EXEC_BASE for r in selected.ruleset.rules)
    assert selected.decisions[EXEC_BASE].reason == (
        "disabled by id:pod-exec; still feeds correlation 'Exec into many pods by one identity'"
    )
    corr = next(c for c in PACK.correlations if "pod-exec" in c.rules or EXEC_BASE in c.rules)
    both = RuleSelection.parse(disable=["id:pod-exec", f"id:{corr.id}"]).apply(PACK)
    assert not any(r.id == EXEC_BASE for r in both.ruleset.rules)
    assert corr not in both.ruleset.correlations


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour:red", "unknown selector kind 'colour'"),
        ("tag:", "empty tag"),
        ("status:retired", "status is one of"),
    ],
)
def test_bad_selectors_are_explained(text: str, message: str) -> None:
    """A selector that cannot match anything is an error, not a silent no-op."""
    with pytest.raises(ValueError, match=message):
        Selector.parse(text)


def test_base_rules_of_other_stateful_detectors_are_kept_when_named() -> None:
    """New terms detectors read base rules too: `feeds` keeps them (the worker passes the
    packaged new terms detectors), so `level:informational` does not silently end them."""
    from detections.stateful.new_terms import load_new_terms

    feeds = {spec.title: spec.rules for spec in load_new_terms()}
    refs = {ref for spec_refs in feeds.values() for ref in spec_refs}
    sel = RuleSelection.parse(disable=["level:informational"])
    kept = {r.name for r in sel.apply(PACK, feeds).ruleset.rules}
    assert refs <= kept
    without = {r.name for r in sel.apply(PACK).ruleset.rules}
    assert refs - without  # some of them are informational: they would have gone
