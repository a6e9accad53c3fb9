"""The modifier registry: one class and one registration line make a modifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from detections import RuleLoadError, load_rules
from detections.matchers import MatchSpecError, Predicate, any_text, compile_match, text_test
from detections.modifiers import registry
from detections.modifiers.base import MatchType, Spec, Target

HEAD = "title: t\nid: 5b6c7d8e-0000-4000-8000-000000000001\nlevel: low\n"


class Palindrome(MatchType):
    """A toy match type: some text of the field reads the same backwards."""

    def compile(self, target: Target, spec: Spec, values: Sequence[Any]) -> Predicate:
        return any_text(target.path, lambda t: t == t[::-1])


def test_a_registered_modifier_compiles_and_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registering a class is all it takes; the usual combination checks apply to it."""
    monkeypatch.setitem(registry.MODIFIERS, "palindrome", Palindrome("palindrome"))
    pred = compile_match("user.username", ("palindrome",), ("x",))
    assert pred({"user": {"username": "abba"}}, {}) is True
    assert pred({"user": {"username": "abc"}}, {}) is False
    with pytest.raises(MatchSpecError, match="palindrome and contains cannot be combined"):
        compile_match("user.username", ("palindrome", "contains"), ("x",))


def test_regex_errors_have_one_path_with_positions() -> None:
    """An invalid RE2 pattern, written or reached through |expand, is a positioned problem."""
    body = "detection:\n  s:\n    userAgent|re: '(oops'\n  condition: s\n"
    with pytest.raises(RuleLoadError) as info:
        load_rules([], texts={"r.yml": HEAD + body})
    assert [str(p) for p in info.value.problems] == [
        "r.yml:6:19: detection.s.userAgent|re: regex '(oops' is not valid RE2 syntax: "
        "missing ): (oops"
    ]


def test_text_test_and_compile_expand_alike() -> None:
    """|expand is expanded in one place for predicates and guards."""
    lists = {"tools": ["peirates", "kube-hunter"]}
    pred = compile_match("userAgent", ("contains", "expand"), ("%tools%",), lists)
    test = text_test(("contains", "expand"), ("%tools%",), lists)
    assert test is not None
    for ua in ["Peirates/1.0", "kube-hunter", "kubectl/v1.31"]:
        assert pred({"userAgent": ua}, {}) is test(ua)
    assert text_test(("expand",), ("%nope%",), lists) is None


def test_text_wise_modifiers_come_from_the_registry() -> None:
    """The guard index and text_test agree on which comparisons test texts one by one."""
    assert {"contains", "re", "cidr", "expand", "base64offset", "i"} <= registry.TEXT_WISE
    assert not {"exists", "gt", "fieldref"} & registry.TEXT_WISE
