"""Specification of `klaxon mitre coverage` and `klaxon mitre show`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from klaxon import mitre_cli
from mitre.coverage import RuleRecord


def main(argv: list[str]) -> int:
    """Run `klaxon <argv>` with only the mitre commands registered (as klaxon.cli does)."""
    parser = argparse.ArgumentParser(prog="klaxon")
    mitre_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


RULE_YAML = """\
title: Privileged pod
id: 0b6f1f6e-0000-4000-8000-000000000001
level: high
tags: [attack.privilege-escalation, attack.t1611]
logsource: {product: kubernetes, service: audit}
detection:
  selection: {verb: create}
  condition: selection
---
title: Exec into pod
id: 0b6f1f6e-0000-4000-8000-000000000002
level: medium
tags: [attack.execution, attack.t1609]
logsource: {product: kubernetes, service: audit}
detection:
  selection: {verb: create}
  condition: selection
---
filter:
  rules: [0b6f1f6e-0000-4000-8000-000000000001]
"""

RECORDS = [
    RuleRecord("a", "Privileged pod", "high", ("attack.privilege-escalation", "attack.t1611")),
    RuleRecord("b", "Exec into pod", "medium", ("attack.execution", "attack.t1609")),
]


@pytest.fixture
def fake_rules(monkeypatch: pytest.MonkeyPatch) -> list[list[Path]]:
    """Replace rule loading with two fixed records; returns the paths it was asked for."""
    seen: list[list[Path]] = []

    def load(paths: list[Path]) -> list[RuleRecord]:
        seen.append(list(paths))
        return RECORDS

    monkeypatch.setattr(mitre_cli, "load_records", load)
    return seen


def test_yaml_fallback_reads_rule_documents_only(tmp_path: Path) -> None:
    """The direct YAML reader takes title/id/level/tags from rule documents and skips filters."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "rules.yml").write_text(RULE_YAML)
    (tmp_path / "notes.txt").write_text("not a rule")
    records = mitre_cli.read_rule_tags([tmp_path])
    assert [(r.title, r.level, r.tags) for r in records] == [
        ("Privileged pod", "high", ("attack.privilege-escalation", "attack.t1611")),
        ("Exec into pod", "medium", ("attack.execution", "attack.t1609")),
    ]


def test_coverage_prints_matrix_and_summary(
    fake_rules: list[list[Path]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`coverage --rules` prints the matrix and the 'N of M' summary line, exit 0."""
    rc = main(["mitre", "coverage", "--rules", str(tmp_path), "--width", "120", "--color", "never"])
    out = capsys.readouterr().out
    assert rc == 0
    assert fake_rules == [[tmp_path]]
    assert "PRIVILEGE ESCALATION  1/11" in out
    assert "2 of 48 ATT&CK v18.1 Containers techniques covered (4%) by 2 rules" in out
    assert max(len(line) for line in out.splitlines()) <= 120


def test_coverage_defaults_to_the_bundled_rule_pack(fake_rules: list[list[Path]]) -> None:
    """Without --rules the shipped detections/rules folder is read."""
    assert main(["mitre", "coverage", "--color", "never"]) == 0
    assert fake_rules == [[mitre_cli.default_rules_path()]]
    assert fake_rules[0][0].parts[-2:] == ("detections", "rules")


def test_coverage_writes_navigator_layer_and_html(
    fake_rules: list[list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--navigator and --html write a JSON layer and an HTML page; stdout keeps the matrix."""
    layer, page = tmp_path / "layer.json", tmp_path / "coverage.html"
    rc = main(["mitre", "coverage", "--navigator", str(layer), "--html", str(page)])
    assert rc == 0
    data = json.loads(layer.read_text())
    assert data["versions"]["layer"] == "4.5"
    assert {t["techniqueID"] for t in data["techniques"]} == {"T1611", "T1609"}
    assert page.read_text().startswith("<!doctype html>")
    captured = capsys.readouterr()
    assert (
        "wrote ATT&CK Navigator layer" in captured.err and "Containers techniques" in captured.out
    )


def test_coverage_names_written_files_relative_to_the_working_directory(
    fake_rules: list[list[Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An output path under the working directory is printed relative to it."""
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)
    assert main(["mitre", "coverage", "--navigator", str(tmp_path / "out" / "l.json")]) == 0
    assert "wrote ATT&CK Navigator layer out/l.json\n" in capsys.readouterr().err


def test_coverage_reports_unloadable_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rules that cannot be read give exit 1 and a message on stderr."""
    broken = tmp_path / "broken.yml"
    broken.write_text("title: [unclosed\n")
    assert main(["mitre", "coverage", "--rules", str(broken)]) == 1
    assert "cannot load rules" in capsys.readouterr().err


def test_show_technique_lists_catalogue_facts_and_rules(
    fake_rules: list[list[Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    """`show T1611` prints name, tactics, URL, the Microsoft mapping and covering rules."""
    assert main(["mitre", "show", "T1611"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("T1611  Escape to Host")
    assert "https://attack.mitre.org/techniques/T1611" in out
    assert "MS-TA9013 Writable hostPath mount" in out
    assert "rules (1):" in out and "Privileged pod" in out


def test_show_mtmk_and_tactic(capsys: pytest.CaptureFixture[str]) -> None:
    """`show MS-TA9018` prints the ATT&CK mapping; `show discovery` lists its techniques."""
    assert main(["mitre", "show", "MS-TA9018"]) == 0
    assert "T1610 Deploy Container" in capsys.readouterr().out
    assert main(["mitre", "show", "discovery"]) == 0
    assert "T1613" in capsys.readouterr().out


def test_show_unknown_id_fails(capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown or malformed ids exit 1 with a message."""
    assert main(["mitre", "show", "T9999", "--no-rules"]) == 1
    assert "unknown ATT&CK technique" in capsys.readouterr().err
    assert main(["mitre", "show", "T1"]) == 1
    assert "is not a technique" in capsys.readouterr().err


def test_bare_mitre_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`klaxon mitre` without a subcommand prints help and exits 2."""
    assert main(["mitre"]) == 2
    assert "coverage" in capsys.readouterr().err


def test_bundled_rule_pack_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped rules load and every one of their ATT&CK tags is valid."""
    if not any(mitre_cli.default_rules_path().rglob("*.yml")):
        pytest.skip("detections/rules has no rules yet")
    assert main(["mitre", "coverage", "--color", "never"]) == 0
    captured = capsys.readouterr()
    assert "Containers techniques covered" in captured.out
    assert "warning: rule" not in captured.err, captured.err
