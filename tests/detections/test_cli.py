"""`klaxon rules validate|test|explain|list|run|convert`: output and exit codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from detections.cli import main

FILES = Path(__file__).parent / "files"
RULE = FILES / "exec_shell.yml"

EXEC_EVENT = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "level": "Metadata",
    "auditID": "0d2c6c4e-1f3a-4b5c-9d8e-7f6a5b4c3d2e",
    "stage": "ResponseStarted",
    "requestURI": "/api/v1/namespaces/shop/pods/web-0/exec?command=%2Fbin%2Fbash&stdin=true",
    "verb": "create",
    "user": {"username": "mallory", "groups": ["system:authenticated"]},
    "sourceIPs": ["203.0.113.7"],
    "objectRef": {"resource": "pods", "namespace": "shop", "name": "web-0", "subresource": "exec"},
    "responseStatus": {"code": 101},
    "stageTimestamp": "2026-11-27T10:00:00.000000Z",
}


def test_validate_clean_rule_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    """A clean rule prints a one-line summary on stdout and exits 0."""
    assert main(["rules", "validate", str(RULE)]) == 0
    out = capsys.readouterr().out
    assert out == "ok: 1 rules, 0 filters, 0 correlations, 2 tests; 0 lint(s)\n"


def test_validate_broken_rule_exits_one_with_problems_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Problems go to stderr as file:line:col lines; the exit code is 1."""
    bad = tmp_path / "bad.yml"
    bad.write_text(RULE.read_text().replace("level: medium", "level: meduim"))
    assert main(["rules", "validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:17:8: level: invalid level 'meduim'" in err
    assert "(did you mean 'medium'?)" in err


def test_strict_makes_lints_fatal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A rule with a lint passes validate but fails validate --strict."""
    linted = tmp_path / "linted.yml"
    linted.write_text(
        RULE.read_text().replace("    verb: create\n", "    verb: create\n    apiGroup: ''\n", 1)
    )
    assert main(["rules", "validate", str(linted)]) == 0
    assert main(["rules", "validate", "--strict", str(linted)]) == 1
    assert "'apiGroup' is an alias" in capsys.readouterr().err


def test_usage_error_exits_two() -> None:
    """An unknown option is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        main(["rules", "validate", "--bogus"])
    assert info.value.code == 2


def test_test_command_passes_and_reports_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules test` exits 0 when fixtures pass, else 1 naming the selection that failed."""
    assert main(["rules", "test", str(RULE)]) == 0
    assert capsys.readouterr().out.endswith("2/2 fixtures passed in 1 rules\n")
    wrong = tmp_path / "wrong.yml"
    wrong.write_text(RULE.read_text().replace("command=%2Fbin%2Fbash", "command=ls"))
    assert main(["rules", "test", str(wrong)]) == 1
    out = capsys.readouterr().out
    assert (
        "test 'bash via kubectl exec' expected hit, got miss; selections not matched: selection"
        in out
    )
    assert "✗ command|endswith: event has 'ls'" in out


def test_explain_shows_each_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rules explain` prints every field comparison with the event's value; exit 0 on a match."""
    event = tmp_path / "event.json"
    event.write_text(json.dumps(EXEC_EVENT))
    assert main(["rules", "explain", str(RULE), str(event)]) == 0
    out = capsys.readouterr().out
    assert "MATCH" in out.splitlines()[0]
    assert "✓ command|endswith: event has '/bin/bash'" in out
    assert "✗ user.username: event has 'mallory'" in out


def test_explain_with_fixture_merges_over_the_base_event(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--fixture treats the file as a partial event; a miss exits 1."""
    event = tmp_path / "partial.yml"
    event.write_text("verb: get\n")
    assert main(["rules", "explain", "--fixture", str(RULE), str(event)]) == 1
    assert "✗ verb: event has 'get'" in capsys.readouterr().out


def test_list_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    """`rules list` prints id, level, ATT&CK, title, whether it is enabled, and file."""
    assert main(["rules", "list", str(RULE)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["ID", "LEVEL", "ATT&CK", "TITLE", "ENABLED", "FILE"]
    assert row.split()[:3] == ["9c4f7a2e-3b1d-4e8f-a6c5-2d7e9f0b1a34", "medium", "T1609"]
    assert "  yes  " in row


def test_list_shows_disabled_rules_and_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Selectors come from the flags, else from the worker's variables; each disabled rule
    says which selector (or default) turned it off; a bad selector is a usage error."""
    assert main(["rules", "list", "--disable", "tag:attack.t1609", str(RULE)]) == 0
    captured = capsys.readouterr()
    assert "no (disabled by tag:attack.t1609)" in captured.out
    assert "1 rules, 1 disabled" in captured.err
    monkeypatch.setenv("KLAXON_RULES_DISABLE", "level:medium")
    assert main(["rules", "list", "--json", str(RULE)]) == 0
    (rule,) = json.loads(capsys.readouterr().out)["rules"]
    assert (rule["enabled"], rule["why"]) == (False, "disabled by level:medium")
    monkeypatch.setenv("KLAXON_RULES_ENABLE", "id:9c4f7a2e-3b1d-4e8f-a6c5-2d7e9f0b1a34")
    assert main(["rules", "list", "--json", str(RULE)]) == 0
    (rule,) = json.loads(capsys.readouterr().out)["rules"]
    assert rule["enabled"] is True and rule["why"].startswith("enabled by id:9c4f7a2e")
    assert main(["rules", "list", "--disable", "level:severe", str(RULE)]) == 2
    assert "level is one of" in capsys.readouterr().err


def test_list_json_is_one_document_with_stable_keys(capsys: pytest.CaptureFixture[str]) -> None:
    """`rules list --json` prints one JSON document: {"rules": [...]}, every rule with the
    same keys (null when the rule says nothing), in the table's order."""
    assert main(["rules", "list", "--json", str(RULE)]) == 0
    document = json.loads(capsys.readouterr().out)
    assert list(document) == ["rules"]
    (rule,) = document["rules"]
    assert list(rule) == [
        "id",
        "name",
        "title",
        "level",
        "status",
        "tactics",
        "techniques",
        "file",
        "line",
        "enabled",
        "why",
    ]
    assert rule["id"] == "9c4f7a2e-3b1d-4e8f-a6c5-2d7e9f0b1a34"
    assert rule["techniques"] == ["T1609"] and rule["line"] == 1


def test_list_prints_paths_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rule file under the working directory is shown relative to it, even when given as
    an absolute path; one elsewhere keeps its absolute path."""
    inside = tmp_path / "work" / "rules" / RULE.name
    inside.parent.mkdir(parents=True)
    inside.write_text(RULE.read_text())
    monkeypatch.chdir(tmp_path / "work")
    assert main(["rules", "list", "--json", str(inside)]) == 0
    assert json.loads(capsys.readouterr().out)["rules"][0]["file"] == "rules/exec_shell.yml"
    monkeypatch.chdir(tmp_path / "work" / "rules")
    assert main(["rules", "list", str(RULE)]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(str(RULE))


def test_run_prints_alerts_as_json_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`rules run` parses a JSON-lines log like the pipeline and prints one alert per match."""
    log = tmp_path / "audit.log"
    benign = {**EXEC_EVENT, "auditID": "other", "verb": "get", "objectRef": {"resource": "pods"}}
    log.write_text(json.dumps(EXEC_EVENT) + "\n" + json.dumps(benign) + "\nnot json\n")
    assert main(["rules", "run", str(RULE), str(log)]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.splitlines()
    alert = json.loads(line)
    assert alert["summary"] == "mallory opened /bin/bash in shop/web-0"
    assert alert["cluster"] == "default"
    assert "2 events, 1 rejected, 1 alerts (1 rules)" in captured.err


def test_validate_says_when_trust_is_by_name_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With cluster_networks empty (as shipped) validate prints a notice; once filled, none.
    Empty policy lists name the policy rules they keep off."""
    monkeypatch.delenv("KLAXON_LISTS", raising=False)
    assert main(["rules", "validate"]) == 0
    err = capsys.readouterr().err
    assert "notice: cluster_networks is empty, so trust is by name only" in err
    mine = tmp_path / "networks.yml"
    mine.write_text("cluster_networks:\n  replace: ['10.0.0.0/8', '172.20.0.0/16']\n")
    assert main(["rules", "validate", "--lists", str(mine)]) == 0
    assert "cluster_networks" not in capsys.readouterr().err


PACKAGED_RULE = Path(__file__).parents[2] / "detections" / "rules" / "privileged-container.yml"


def test_convert_prints_queries_and_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """`rules convert --target splunk` writes one query per rule, the summary on stderr."""
    assert main(["rules", "convert", "--target", "splunk", str(PACKAGED_RULE)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# splunk: rule 'Privileged container in a pod or workload' (")
    assert '"requestObject.spec.containers{}.securityContext.privileged"=true' in captured.out
    assert "splunk: 1/1 rules, 0/0 correlations converted" in captured.err


def test_convert_lists_a_rule_it_cannot_convert_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A rule on the decoded exec command is listed with why, and the command still succeeds."""
    assert main(["rules", "convert", "--target", "elasticsearch", str(RULE)]) == 0
    captured = capsys.readouterr()
    assert "cannot convert rule 'Interactive shell opened in a pod'" in captured.out
    assert "URL-encoded" in captured.out
    assert "elasticsearch: 0/1 rules" in captured.err


def test_convert_json_and_summary_only(capsys: pytest.CaptureFixture[str]) -> None:
    """`--json` writes one object per rule and target; `--summary` only the summary."""
    assert main(["rules", "convert", "--target", "all", "--json", str(PACKAGED_RULE)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["target"] for x in lines] == ["splunk", "elasticsearch", "kusto", "sqlite"]
    assert [x["reason"] is None for x in lines] == [True, True, False, True]  # kusto: lists
    assert main(["rules", "convert", "--target", "splunk", "--summary", str(PACKAGED_RULE)]) == 0
    assert capsys.readouterr().out.startswith("splunk: 1/1 rules")


def test_convert_without_pysigma_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without the `convert` extra the command fails with the pip command to run."""
    for name in [
        m for m in sys.modules if m == "sigma" or m.startswith(("sigma.", "detections.convert"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "sigma", None)
    assert main(["rules", "convert", "--target", "splunk", str(RULE)]) == 1
    assert "pip install 'klaxon[convert]'" in capsys.readouterr().err


def test_convert_target_names_are_the_registry() -> None:
    """The command line's target choices are exactly `detections.convert.TARGETS`."""
    from detections.cli import CONVERT_TARGETS
    from detections.convert import TARGETS

    assert tuple(TARGETS) == CONVERT_TARGETS


def test_convert_field_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    """`--field-prefix` puts Elasticsearch and Splunk names under where a shipper nests the
    event; targets with fixed names refuse it as a usage error."""
    argv = ["rules", "convert", "--field-prefix", "kubernetes.audit.", str(PACKAGED_RULE)]
    assert main([*argv, "--target", "elasticsearch"]) == 0
    assert "kubernetes.audit.objectRef.resource:(pods" in capsys.readouterr().out
    assert main([*argv, "--target", "kusto"]) == 2
    assert "cannot take a prefix" in capsys.readouterr().err
