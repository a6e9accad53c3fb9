"""Every kind of rule mistake is reported as `file:line:col: key.path: message (hint)`.

The expected strings are the contract with rule authors: position, dotted key path, a
message that says what is wrong, and a difflib suggestion where one is close.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from detections import RuleLoadError, load_rules

HEAD = "title: t\nid: 5b6c7d8e-0000-4000-8000-000000000001\n"

CASES = [
    pytest.param(
        HEAD + "detection:\n  sel: {verb: get\n  condition: sel\n",
        (
            "yaml_syntax.yml:5:12: YAML syntax error: did not find expected ',' or '}' "
            "(while parsing a flow mapping started at line 4, column 8)"
        ),
        id="yaml_syntax",
    ),
    pytest.param(
        HEAD + "detection:\n  sel:\n    verb: get\n    verb: list\n  condition: sel\n",
        (
            "duplicate_key.yml:6:5: detection.sel.verb: duplicate key 'verb' "
            "(first defined at line 5)"
        ),
        id="duplicate_key",
    ),
    pytest.param(
        HEAD + "levle: high\ndetection:\n  sel: {verb: get}\n  condition: sel\n",
        ("unknown_top.yml:3:1: levle: unknown top-level key 'levle' (did you mean 'level'?)"),
        id="unknown_top",
    ),
    pytest.param(
        HEAD + "level: hihg\ndetection:\n  sel: {verb: get}\n  condition: sel\n",
        (
            "bad_level.yml:3:8: level: invalid level 'hihg'; expected one of "
            "informational, low, medium, high, critical (did you mean "
            "'high'?)"
        ),
        id="bad_level",
    ),
    pytest.param(
        HEAD + "status: stabel\ndetection:\n  sel: {verb: get}\n  condition: sel\n",
        (
            "bad_status.yml:3:9: status: invalid status 'stabel'; expected "
            "one of stable, test, experimental, deprecated, unsupported (did "
            "you mean 'stable'?)"
        ),
        id="bad_status",
    ),
    pytest.param(
        HEAD + "detection:\n  sel:\n    requestURI|contians: exec\n  condition: sel\n",
        (
            "unknown_modifier.yml:5:5: detection.sel.requestURI|contians: "
            "unknown modifier 'contians' (did you mean 'contains'?)"
        ),
        id="unknown_modifier",
    ),
    pytest.param(
        HEAD + "detection:\n  selection: {verb: get}\n  condition: selecton\n",
        (
            "unknown_selection.yml:5:14: detection.condition: unknown "
            "selection 'selecton' in condition 'selecton' (did you mean "
            "'selection'?)"
        ),
        id="unknown_selection",
    ),
    pytest.param(
        HEAD + "detection:\n  sel: {verb: get}\n  condition: sel and (not sel\n",
        (
            "condition_syntax.yml:5:30: detection.condition: missing ')' in "
            "condition 'sel and (not sel'"
        ),
        id="condition_syntax",
    ),
    pytest.param(
        HEAD + "detection:\n  sel:\n    requestURI|re: '(a)\\1'\n  condition: sel\n",
        (
            "bad_regex.yml:5:20: detection.sel.requestURI|re: regex "
            "'(a)\\\\1' is not valid RE2 syntax: invalid escape sequence: \\1"
        ),
        id="bad_regex",
    ),
    pytest.param(
        HEAD
        + "detection:\n"
        + "  sel:\n"
        + "    sourceIPs|cidr:\n"
        + "      - 10.0.0.0/8\n"
        + "      - 10.0.0.300/24\n"
        + "  condition: sel\n",
        ("bad_cidr.yml:7:9: detection.sel.sourceIPs|cidr[1]: invalid CIDR '10.0.0.300/24'"),
        id="bad_cidr",
    ),
    pytest.param(
        "id: 5b6c7d8e-0000-4000-8000-000000000001\n"
        "detection:\n  sel: {verb: get}\n  condition: sel\n",
        ("missing_title.yml:1:1: missing required key 'title'"),
        id="missing_title",
    ),
    pytest.param(
        "title: t\nid: not-a-uuid\ndetection:\n  sel: {verb: get}\n  condition: sel\n",
        ("bad_uuid.yml:2:5: id: id 'not-a-uuid' is not a UUID"),
        id="bad_uuid",
    ),
    pytest.param(
        HEAD
        + "detection:\n"
        + "  sel:\n"
        + "    user.username|expand: '%system_principal%'\n"
        + "  condition: sel\n",
        (
            "unknown_list.yml:5:27: detection.sel.user.username|expand: "
            "unknown list 'system_principal' (did you mean "
            "'system_principals'?)"
        ),
        id="unknown_list",
    ),
    pytest.param(
        HEAD
        + "detection:\n"
        + "  sel: {verb: get}\n"
        + "  condition: sel\n"
        + "klaxon:\n"
        + "  sumary: x\n",
        ("klaxon_key.yml:7:3: klaxon.sumary: unknown key 'sumary' (did you mean 'summary'?)"),
        id="klaxon_key",
    ),
    pytest.param(
        HEAD
        + "detection:\n"
        + "  sel: {verb: get}\n"
        + "  condition: sel\n"
        + "klaxon:\n"
        + "  tests:\n"
        + "    - name: a\n"
        + "      expect: hits\n"
        + "      event: {}\n",
        (
            "bad_expect.yml:9:15: klaxon.tests[0].expect: expect must be "
            "'hit' or 'miss', got 'hits' (did you mean 'hit'?)"
        ),
        id="bad_expect",
    ),
    pytest.param(
        HEAD
        + "detection:\n"
        + "  sel:\n"
        + "    responseStatus.code|gte: four hundred\n"
        + "  condition: sel\n",
        (
            "gt_not_number.yml:5:30: detection.sel.responseStatus.code|gte: "
            "'gte' needs a number, got 'four hundred'"
        ),
        id="gt_not_number",
    ),
    pytest.param(
        HEAD
        + "detection:\n"
        + "  sel:\n"
        + "    requestObject|exists: yes please\n"
        + "  condition: sel\n",
        (
            "exists_not_bool.yml:5:5: detection.sel.requestObject|exists: "
            "'exists' takes a single true or false"
        ),
        id="exists_not_bool",
    ),
    pytest.param(
        HEAD
        + "detection:\n"
        + "  sel:\n"
        + "    requestURI|contains|startswith: /api\n"
        + "  condition: sel\n",
        (
            "incompatible_modifiers.yml:5:5: "
            "detection.sel.requestURI|contains|startswith: modifiers contains "
            "and startswith cannot be combined"
        ),
        id="incompatible_modifiers",
    ),
    pytest.param(
        HEAD + "detection:\n  sel:\n    requestURI|contains|i: /api\n  condition: sel\n",
        (
            "regex_flag_without_re.yml:5:5: "
            "detection.sel.requestURI|contains|i: modifier 'i' is a regex "
            "flag and needs '|re' before it"
        ),
        id="regex_flag_without_re",
    ),
    pytest.param(
        HEAD + "detection:\n  sel: {verb: get}\n",
        ("missing_condition.yml:3:1: detection: missing 'condition'"),
        id="missing_condition",
    ),
    pytest.param(
        HEAD + "detection:\n  keywords:\n    - evil\n  condition: keywords\n",
        (
            "keyword_selection.yml:4:3: detection.keywords: keyword "
            "(field-less) selections are not supported on audit events; name "
            "the field, e.g. 'requestURI|contains: [...]'"
        ),
        id="keyword_selection",
    ),
    pytest.param(
        HEAD + "detection:\n  sel: {verb: get}\n  condition: sel | count() > 5\n",
        (
            "v1_aggregation.yml:5:18: detection.condition: aggregations in "
            "conditions ('| count() ...') are Sigma v1; write a correlation "
            "document instead"
        ),
        id="v1_aggregation",
    ),
    pytest.param(
        HEAD + "detection:\n  selection: {verb: get}\n  condition: 1 of filter_*\n",
        (
            "pattern_no_match.yml:5:19: detection.condition: pattern "
            "'filter_*' matches no selection in condition '1 of filter_*'"
        ),
        id="pattern_no_match",
    ),
    pytest.param(
        HEAD + "date: 2024-13-45x\ndetection:\n  sel: {verb: get}\n  condition: sel\n",
        ("bad_date.yml:3:7: date: invalid date '2024-13-45x'; expected YYYY-MM-DD"),
        id="bad_date",
    ),
    pytest.param(
        HEAD
        + "detection:\n"
        + "  sel: {verb: get}\n"
        + "  condition: sel\n"
        + "klaxon:\n"
        + "  summary: '{user.username!r} did it'\n",
        (
            "bad_summary.yml:7:12: klaxon.summary: placeholder "
            "{user.username!r} must be a plain field path like "
            "{user.username}"
        ),
        id="bad_summary",
    ),
    pytest.param(
        HEAD + "detection:\n  sel: {}\n  condition: sel\n",
        ("empty_selection.yml:4:3: detection.sel: empty selection (it would match every event)"),
        id="empty_selection",
    ),
    pytest.param(
        HEAD
        + "detection:\n"
        + "  sel: {verb: get}\n"
        + "  condition: sel\n"
        + "klaxon:\n"
        + "  mtmk: [TA9001]\n",
        ("bad_mtmk.yml:7:10: klaxon.mtmk[0]: 'TA9001' is not a Threat Matrix id like MS-TA9013"),
        id="bad_mtmk",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_mistake_is_reported_with_position_and_hint(text: str, expected: str) -> None:
    """One broken rule gives exactly one problem, rendered exactly as the author will see it."""
    name = expected.split(":", 1)[0]
    with pytest.raises(RuleLoadError) as info:
        load_rules([], texts={name: text})
    assert [str(p) for p in info.value.problems] == [expected]


def test_quoted_condition_column_points_inside_the_quotes() -> None:
    """A condition written in quotes is located one column further right."""
    text = HEAD + "detection:\n  sel: {verb: get}\n  condition: 'sel or nope'\n"
    with pytest.raises(RuleLoadError) as info:
        load_rules([], texts={"q.yml": text})
    (problem,) = info.value.problems
    assert (problem.line, problem.col) == (5, 22)


def test_all_problems_of_all_files_are_reported_in_one_run(tmp_path: Path) -> None:
    """Two broken files with two mistakes each yield four problems, sorted by file and line."""
    (tmp_path / "a.yml").write_text(
        HEAD + "levle: high\ndetection:\n  sel: {verb|x: get}\n  condition: sel\n"
    )
    (tmp_path / "b.yml").write_text(
        "title: t\nid: nope\nstatus: tset\ndetection: {sel: {verb: get}, condition: sel}\n"
    )
    with pytest.raises(RuleLoadError) as info:
        load_rules([tmp_path])
    where = [(Path(p.file).name, p.line) for p in info.value.problems]
    assert where == [("a.yml", 3), ("a.yml", 5), ("b.yml", 2), ("b.yml", 3)]
    assert str(info.value).startswith("4 problems in rules\n")


def test_duplicate_ids_point_at_both_places() -> None:
    """Two rules sharing an id are each told where the other one is."""
    rule = HEAD + "detection:\n  sel: {verb: get}\n  condition: sel\n"
    with pytest.raises(RuleLoadError) as info:
        load_rules([], texts={"one.yml": rule, "two.yml": rule})
    assert [str(p) for p in info.value.problems] == [
        "one.yml:2:1: id: duplicate id 5b6c7d8e-0000-4000-8000-000000000001 "
        "(also used by 't' at two.yml:2)",
        "two.yml:2:1: id: duplicate id 5b6c7d8e-0000-4000-8000-000000000001 "
        "(also used by 't' at one.yml:2)",
    ]


def test_duplicate_rule_names_are_refused() -> None:
    """Correlations name their base rules, so two rules sharing a name is an error."""
    body = "name: same\ndetection:\n  sel: {verb: get}\n  condition: sel\n"
    other = HEAD.replace("000000000001", "000000000002")
    with pytest.raises(RuleLoadError) as info:
        load_rules([], texts={"one.yml": HEAD + body, "two.yml": other + body})
    assert [str(p) for p in info.value.problems] == [
        "two.yml:3:1: name: duplicate name 'same' (also used at one.yml:3): "
        "correlations would count the wrong rule"
    ]


def test_filter_naming_an_unknown_rule_suggests_the_closest() -> None:
    """A meta-filter must name loaded rules; a typo gets a suggestion."""
    rule = HEAD + "name: exec_into_pod\ndetection:\n  sel: {verb: create}\n  condition: sel\n"
    flt = (
        "title: allow ci\nfilter:\n  rules: [exec_into_pd]\n"
        "  sel: {user.username: ci}\n  condition: not sel\n"
    )
    with pytest.raises(RuleLoadError) as info:
        load_rules([], texts={"r.yml": rule, "f.yml": flt})
    assert [str(p) for p in info.value.problems] == [
        "f.yml:3:11: filter.rules[0]: filter names unknown rule 'exec_into_pd' "
        "(did you mean 'exec_into_pod'?)"
    ]


def test_correlation_mistakes_are_reported() -> None:
    """A correlation with a bad type and timespan reports both."""
    rule = HEAD + "name: denied\ndetection:\n  sel: {decision: forbid}\n  condition: sel\n"
    corr = (
        "title: many denials\ncorrelation:\n  type: event_cout\n  rules: [denied]\n"
        "  group-by: [user.username]\n  timespan: 5 minutes\n  condition: {gte: 10}\n"
    )
    with pytest.raises(RuleLoadError) as info:
        load_rules([], texts={"r.yml": rule, "c.yml": corr})
    assert [str(p) for p in info.value.problems] == [
        "c.yml:3:9: correlation.type: invalid type 'event_cout'; expected one of event_count, "
        "value_count, temporal, temporal_ordered (did you mean 'event_count'?)",
        "c.yml:6:13: correlation.timespan: timespan '5 minutes' must look like 5m, 1h or 30s",
    ]


def test_missing_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """A path that does not exist is reported like any other problem."""
    with pytest.raises(RuleLoadError) as info:
        load_rules([tmp_path / "nope.yml"])
    assert info.value.problems[0].message == "no such file or folder"
