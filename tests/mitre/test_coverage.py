"""Specification of the coverage model and its terminal, Navigator and HTML renderings."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

import pytest

from mitre import catalogue
from mitre.coverage import (
    Coverage,
    RuleRecord,
    build_coverage,
    navigator_layer,
    render_html,
    render_terminal,
)

RULES = [
    RuleRecord("r-priv", "Privileged pod", "high", ("attack.privilege-escalation", "attack.t1611")),
    RuleRecord("r-host", "Writable hostPath", "high", ("attack.t1611",)),
    RuleRecord("r-exec", "Exec into pod", "medium", ("attack.execution", "attack.t1609")),
    RuleRecord("r-cron", "CronJob created", "medium", ("attack.persistence", "attack.t1053.007")),
    RuleRecord("r-cloud", "Cloud creds", "low", ("attack.initial-access", "attack.t1078.004")),
    RuleRecord("r-none", "Noisy thing", "low", ("attack.discovery",)),
    RuleRecord("r-bad", "Typo", "low", ("attack.execution", "attack.t1609", "attack.t9999")),
]


@pytest.fixture(scope="module")
def cov() -> Coverage:
    """Coverage of the sample rules."""
    return build_coverage(RULES)


# --- model ----------------------------------------------------------------------------------


def test_rule_counts_under_the_tactics_it_lists(cov: Coverage) -> None:
    """A rule listing a tactic counts only in that tactic's column."""
    assert cov.cell("T1053.007", "persistence").count == 1
    assert cov.cell("T1053.007", "execution").count == 0
    assert cov.cell("T1053.007", "privilege-escalation").count == 0


def test_rule_without_a_matching_tactic_counts_under_all_technique_tactics(cov: Coverage) -> None:
    """A technique tag with no tactic tag of its own lands under every tactic of the technique."""
    assert [r.rule_id for r in cov.cell("T1611", "privilege-escalation").rules] == [
        "r-priv",
        "r-host",
    ]


def test_each_rule_counts_once_per_cell() -> None:
    """Repeated tags and repeated records of one rule do not inflate a count."""
    rule = RuleRecord("r1", "Exec", "medium", ("attack.t1609", "attack.t1609", "attack.T1609"))
    cov = build_coverage([rule, rule])
    assert cov.cell("T1609", "execution").count == 1


def test_summary_counts_distinct_containers_techniques(cov: Coverage) -> None:
    """Covered = distinct Containers techniques with a rule, of the 48; extras counted apart."""
    assert cov.covered == {"T1611", "T1609", "T1053.007"}
    assert cov.covered_outside == {"T1078.004"}
    assert cov.total == 48
    assert cov.summary() == (
        "3 of 48 ATT&CK v18.1 Containers techniques covered (6%) by 7 rules;"
        " 1 more outside Containers; 1 without an ATT&CK technique"
    )


def test_untagged_rules_and_tag_problems_are_kept(cov: Coverage) -> None:
    """Rules naming no technique are listed, and tag problems are attributed to their rule."""
    assert [r.rule_id for r in cov.untagged] == ["r-none"]
    assert len(cov.problems) == 1 and cov.problems[0][0] == "r-bad"
    assert "T9999" in cov.problems[0][1]


def test_columns_are_the_containers_matrix_plus_covered_extra_tactics() -> None:
    """Nine columns in matrix order; Collection appears only once a rule covers it."""
    base = [c.tactic.shortname for c in build_coverage([]).columns]
    assert base == [t.shortname for t in catalogue().matrix_tactics()]
    rule = RuleRecord("r", "Pull private image", "low", ("attack.collection", "attack.t1530"))
    cols = [c.tactic.shortname for c in build_coverage([rule]).columns]
    assert cols.index("collection") == cols.index("lateral-movement") + 1
    assert "command-and-control" not in cols


def test_uncovered_techniques_are_shown_and_extras_only_when_covered(cov: Coverage) -> None:
    """Every Containers technique of a tactic has a cell; outside techniques only with rules."""
    initial = next(c for c in cov.columns if c.tactic.shortname == "initial-access")
    ids = [c.technique.id for c in initial.cells]
    assert "T1190" in ids and "T1078.004" in ids
    execution = next(c for c in cov.columns if c.tactic.shortname == "execution")
    assert "T1059" not in [c.technique.id for c in execution.cells]


def test_sub_techniques_follow_their_parent(cov: Coverage) -> None:
    """Within a column a parent is followed directly by its sub-techniques."""
    persistence = next(c for c in cov.columns if c.tactic.shortname == "persistence")
    ids = [c.technique.id for c in persistence.cells]
    assert ids[ids.index("T1078") + 1 : ids.index("T1078") + 3] == ["T1078.001", "T1078.003"]


def test_plain_tuples_are_accepted_as_records() -> None:
    """(rule_id, title, level, tags) tuples work as well as RuleRecord."""
    cov = build_coverage([("x", "Exec", "low", ["attack.t1609"])])
    assert cov.cell("T1609", "execution").rules == (
        RuleRecord("x", "Exec", "low", ("attack.t1609",)),
    )


# --- terminal -------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [100, 110, 120, 80, 60])
def test_terminal_matrix_fits_the_width(cov: Coverage, width: int) -> None:
    """No line is wider than asked, and every matrix column header is printed."""
    text = render_terminal(cov, width=width)
    assert max(len(line) for line in text.splitlines()) <= width
    for col in cov.columns:
        assert col.tactic.name.upper() in text


def test_terminal_shows_counts_zeroes_and_the_summary(cov: Coverage) -> None:
    """Covered techniques show their count, uncovered ones 0, and the summary ends the output."""
    text = render_terminal(cov, width=120)
    assert re.search(r"\b2 T1611 +Escape to Host", text)
    assert re.search(r"\b0 T1190 +Exploit Public", text)
    assert re.search(r"\b1   \.004\* +Cloud Accounts", text)  # outside Containers is marked
    assert " ".join(text.split("\n\n")[-1].split("\n")[1:]).strip() == cov.summary()
    assert "\x1b[" not in text


def test_terminal_colour_dims_uncovered_and_heats_covered(cov: Coverage) -> None:
    """With colour, zero cells are dimmed and covered cells are coloured; widths still fit."""
    text = render_terminal(cov, width=120, color=True)
    assert "\x1b[2m  0 T1190" in text
    assert re.search(r"\x1b\[[0-9;]*38;5;\d+m  2 T1611", text)
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    assert max(len(line) for line in plain.splitlines()) <= 120


# --- ATT&CK Navigator layer -----------------------------------------------------------------

HEX = re.compile(r"#[0-9a-fA-F]{6}")
ENTERPRISE_TACTICS = {
    "reconnaissance", "resource-development", "initial-access", "execution", "persistence",
    "privilege-escalation", "defense-evasion", "credential-access", "discovery",
    "lateral-movement", "collection", "command-and-control", "exfiltration", "impact",
}  # fmt: skip


def navigator_problems(layer: dict[str, Any]) -> list[str]:
    """Checks from the Navigator layer format 4.5 spec (LAYERFORMATv4_5.md), plus display rules.

    Required: name, domain; versions.layer "4.5" and versions.navigator >= 4.9.0; techniqueID
    T####(.###); optional fields typed as the spec says; gradient with >= 2 colours and
    maxValue > minValue; legend items with label and colour. Display rule (the Navigator hides
    an annotation otherwise): a technique's `tactic` must be one of that technique's tactics.
    """
    p: list[str] = []
    for key, typ in (("name", str), ("domain", str)):
        if not isinstance(layer.get(key), typ):
            p.append(f"{key} missing")
    if layer.get("domain") not in ("enterprise-attack", "mobile-attack", "ics-attack"):
        p.append("bad domain")
    v = layer.get("versions", {})
    if v.get("layer") != "4.5":
        p.append("versions.layer must be 4.5")
    nav = tuple(int(x) for x in str(v.get("navigator", "0")).split("."))
    if nav < (4, 9, 0):
        p.append("versions.navigator must be >= 4.9.0")
    if not re.fullmatch(r"\d+", str(v.get("attack", ""))):
        p.append("versions.attack must be a major ATT&CK version")
    plats = layer.get("filters", {}).get("platforms", [])
    if not (isinstance(plats, list) and all(isinstance(x, str) for x in plats)):
        p.append("filters.platforms must be a list of strings")
    if layer.get("sorting", 0) not in (0, 1, 2, 3):
        p.append("sorting must be 0..3")
    layout = layer.get("layout", {})
    if layout.get("layout", "side") not in ("side", "flat", "mini"):
        p.append("layout.layout")
    if layout.get("aggregateFunction", "average") not in ("average", "min", "max", "sum"):
        p.append("layout.aggregateFunction")
    if layout.get("expandedSubtechniques", "none") not in ("none", "all", "annotated"):
        p.append("layout.expandedSubtechniques")
    cat = catalogue()
    for i, t in enumerate(layer.get("techniques", [])):
        p += technique_problems(i, t, cat.technique)
    return p + display_problems(layer)


def display_problems(layer: dict[str, Any]) -> list[str]:
    """Problems of a Navigator layer's gradient and legend (see `navigator_problems`)."""
    p: list[str] = []
    g = layer.get("gradient")
    if g is not None:
        if len(g.get("colors", [])) < 2 or not all(HEX.fullmatch(c) for c in g["colors"]):
            p.append("gradient.colors")
        if not g.get("maxValue", 0) > g.get("minValue", 0):
            p.append("gradient.maxValue must be > minValue")
    for item in layer.get("legendItems", []):
        if not (isinstance(item.get("label"), str) and HEX.fullmatch(item.get("color", ""))):
            p.append("legendItems")
    return p


def technique_problems(i: int, t: dict[str, Any], technique: Callable[[str], Any]) -> list[str]:
    """Problems of ``techniques[i]`` of a Navigator layer (see `navigator_problems`)."""
    p: list[str] = []
    tid = t.get("techniqueID")
    if not (isinstance(tid, str) and re.fullmatch(r"T\d{4}(\.\d{3})?", tid)):
        p.append(f"techniques[{i}].techniqueID")
        return p
    tac = t.get("tactic")
    if tac is not None and tac not in ENTERPRISE_TACTICS:
        p.append(f"techniques[{i}].tactic unknown")
    if tac is not None and tac not in technique(tid).tactics:
        p.append(f"techniques[{i}]: {tid} is not a {tac} technique")
    if "score" in t and not isinstance(t["score"], int | float):
        p.append(f"techniques[{i}].score")
    for key, typ in (("comment", str), ("enabled", bool), ("showSubtechniques", bool)):
        if key in t and not isinstance(t[key], typ):
            p.append(f"techniques[{i}].{key}")
    if "color" in t and t["color"] and not HEX.fullmatch(t["color"]):
        p.append(f"techniques[{i}].color")
    for m in t.get("metadata", []):
        if not ({"name", "value"} <= m.keys() or m.get("divider") is True):
            p.append(f"techniques[{i}].metadata")
    return p


def test_navigator_layer_satisfies_the_layer_format(cov: Coverage) -> None:
    """The generated layer passes every check of the 4.5 layer format and is JSON."""
    layer = navigator_layer(cov)
    assert navigator_problems(json.loads(json.dumps(layer))) == []


def test_navigator_checks_can_fail() -> None:
    """The layer checks reject a layer with the mistakes the Navigator would choke on."""
    bad = {
        "name": "x",
        "domain": "enterprise",
        "versions": {"attack": "18", "navigator": "4.8.0", "layer": "4.4"},
        "techniques": [{"techniqueID": "T1611", "tactic": "execution", "score": "3"}],
        "gradient": {"colors": ["#fff"], "minValue": 1, "maxValue": 1},
    }
    assert navigator_problems(bad) == [
        "bad domain",
        "versions.layer must be 4.5",
        "versions.navigator must be >= 4.9.0",
        "techniques[0]: T1611 is not a execution technique",
        "techniques[0].score",
        "gradient.colors",
        "gradient.maxValue must be > minValue",
    ]


def test_navigator_layer_content_matches_the_coverage(cov: Coverage) -> None:
    """Versions, domain, platform filter, one scored entry per covered cell, titles in comments."""
    layer = navigator_layer(cov)
    assert layer["versions"] == {"attack": "18", "navigator": "5.1.0", "layer": "4.5"}
    assert layer["domain"] == "enterprise-attack"
    assert layer["filters"] == {"platforms": ["Containers"]}
    entries = {(t["techniqueID"], t["tactic"]): t for t in layer["techniques"]}  # type: ignore[attr-defined]
    assert set(entries) == {
        ("T1611", "privilege-escalation"),
        ("T1609", "execution"),
        ("T1053.007", "persistence"),
        ("T1078.004", "initial-access"),
    }
    t1611 = entries[("T1611", "privilege-escalation")]
    assert t1611["score"] == 2
    assert t1611["comment"] == "2 rules: Privileged pod; Writable hostPath"
    assert layer["gradient"]["maxValue"] == 2  # type: ignore[index]
    assert "T1078.004" in str(layer["description"])  # hidden by the filter, so said


# --- HTML -----------------------------------------------------------------------------------


class _Cells(HTMLParser):
    """Collects technique cells and any element that would load something external."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[str, str | None]] = []
        self.external: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-technique" in a:
            self.cells.append(a)
        if tag in ("script", "iframe", "object", "embed"):
            self.scripts += 1
        for key in ("src", "href"):
            if a.get(key):
                self.external.append(str(a[key]))


def test_html_is_self_contained(cov: Coverage) -> None:
    """No script, no src/href, no url() or @import in CSS; a CSP forbids loading anything."""
    page = render_html(cov)
    parser = _Cells()
    parser.feed(page)
    assert parser.scripts == 0 and parser.external == []
    assert "url(" not in page and "@import" not in page
    assert "default-src 'none'" in page


def test_html_cells_carry_counts_colours_and_rule_titles(cov: Coverage) -> None:
    """Each cell has its count; covered cells are coloured and their hover lists the rules."""
    parser = _Cells()
    parser.feed(render_html(cov))
    cells = {(c["data-technique"], c["data-count"]): c for c in parser.cells}
    t1611 = cells[("T1611", "2")]
    assert "Privileged pod [high]" in str(t1611["title"])
    assert "Writable hostPath [high]" in str(t1611["title"])
    assert "background:#74c476" in str(t1611["style"])
    assert "background:#f1f3f5" in str(cells[("T1190", "0")]["style"])
    total = sum(len(col.cells) for col in cov.columns)
    assert len(parser.cells) == total


def test_html_escapes_rule_text() -> None:
    """Rule titles cannot inject markup into the page."""
    rule = RuleRecord("x", '<img src=x onerror="alert(1)">', "high", ("attack.t1609",))
    page = render_html(build_coverage([rule]))
    assert "<img" not in page and "&lt;img src=x" in page
