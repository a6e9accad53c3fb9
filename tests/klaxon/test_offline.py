"""`klaxon replay --offline` (`klaxon.offline`): the worker's processing in one process gives
the pipeline's alert ids."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from detections.grouping import THRESHOLDS
from klaxon.cli import main
from klaxon.offline import OfflineRun, build_offline
from pipeline.config import Settings
from replay.reader import iter_batches, iter_events
from replay.sample import SAMPLE_PATH
from tests.pipeline.conftest import CLUSTER, RULES, expected_for


def offline_alerts(
    settings: Settings, lines: list[bytes]
) -> tuple[OfflineRun, list[dict[str, Any]]]:
    # A clock that stands still: the periodic tick (wall time) never fires mid-run, so what a
    # run yields does not depend on how fast this machine is; the end of input flushes.
    run = build_offline(settings, clock=lambda: 0.0)
    alerts = list(run.run(b.payload for b in iter_batches(lines)))
    return run, alerts


def test_the_sample_offline_gives_the_offline_engines_stateless_alert_ids() -> None:
    """Same rules, same cluster, no stateful families, no grouping: exactly `expected_for`'s
    ids, and the summary adds up."""
    lines = list(iter_events(SAMPLE_PATH))
    settings = Settings(
        rules_paths=(RULES,), cluster=CLUSTER, stateful_detectors=(), grouping=False
    )
    run, alerts = offline_alerts(settings, lines)
    expected = expected_for(lines, with_garbage=False)
    assert {a["id"] for a in alerts} == expected.alert_ids
    assert len(alerts) == len(expected.alert_ids)
    s = run.summary
    assert (s.read, s.normalised) == (len(lines), expected.normalised)
    assert s.alerts == len(alerts) and sum(s.by_rule.values()) == len(alerts)


def test_offline_alerts_carry_labels_and_tags_and_follow_the_rule_selection() -> None:
    """Every alert, stateful ones included, has the configured labels and its rule's tags;
    a disabled rule raises no alert, the others raise the same alerts as without selection."""
    lines = list(iter_events(SAMPLE_PATH))
    # The packaged pack: stateful families alert too. No grouping: which alerts carry a group
    # depends on the rules that fold into them, and this is about selecting rules.
    plain = Settings(cluster=CLUSTER, grouping=False)
    _, before = offline_alerts(plain, lines)
    noisy = max(sorted({a["rule"]["id"] for a in before}), key=lambda i: sum(
        a["rule"]["id"] == i for a in before))  # fmt: skip
    settings = plain.replace(
        labels=(("env", "prod"), ("team", "sec")),
        rules_disable=(f"id:{noisy}",),
    )
    _, after = offline_alerts(settings, lines)
    assert after and all(a["labels"] == {"env": "prod", "team": "sec"} for a in after)
    assert any(a["evidence"].get("detector") for a in after)  # stateful alerts are labelled too
    assert all(isinstance(a["tags"], list) for a in after)
    assert any(t.startswith("attack.") for a in after for t in a["tags"])
    assert noisy not in {a["rule"]["id"] for a in after}
    stateless = {a["id"] for a in before if a["rule"]["id"] != noisy}
    assert stateless <= {a["id"] for a in after} | {
        a["id"] for a in before if a["evidence"].get("detector")
    }


def test_the_cli_prints_json_alerts_and_a_summary_with_dead_letters_and_filtered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No broker configured: offline. Garbage is dead-lettered, RequestReceived filtered."""
    lines = list(iter_events(SAMPLE_PATH))
    rr = {**orjson.loads(lines[0]), "stage": "RequestReceived"}
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"\n".join([*lines, b"not json", orjson.dumps(rr)]))
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "KLAXON_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KLAXON_RULES", str(RULES))
    monkeypatch.setenv("KLAXON_CLUSTER", CLUSTER)
    monkeypatch.setenv("KLAXON_GROUPING", "off")
    assert main(["replay", str(path), "--json"]) == 0
    out, err = capsys.readouterr()
    got = {json.loads(line)["id"] for line in out.splitlines() if line}
    assert got >= expected_for(lines, with_garbage=False).alert_ids
    assert got
    assert f"read {len(lines) + 2} events" in err
    assert f"{len(lines)} normalised, 1 filtered, 1 dead-lettered" in err
    assert f"{len(got)} alerts" in err and "by severity:" in err and "by rule:" in err


def test_rewrite_time_moves_alert_times_and_keeps_the_ids_of_shifted_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rewrite-time 2031-01-01T00:00:00Z: every alert's event time is in 2031 (the first
    event at midnight), and the table is printed."""
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.setenv("KLAXON_RULES", str(RULES))
    argv = ["replay", str(SAMPLE_PATH), "--offline", "--rewrite-time", "2031-01-01T00:00:00Z"]
    assert main([*argv, "--json"]) == 0
    alerts = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert alerts and all(a["event_time"].startswith("2031-01-01T") for a in alerts)
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("TIME ")


def test_bad_rewrite_time_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", str(SAMPLE_PATH), "--offline", "--rewrite-time", "soon"]) == 2
    assert "not an RFC 3339 timestamp" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_offline_replay_of_the_sample_gives_the_demos_alert_ids(tmp_path: Path) -> None:
    """`klaxon demo` (embedded Tansu, a worker, the bundled sample) and `klaxon replay
    --offline` of the same sample, with the shipped rules and every stateful family.

    Compared exactly: stateless alerts as grouped (first alerts and threshold updates),
    correlations and new terms (their ids depend only on the events, their order per
    partition, and group ids, which both keep). Only a subset in the demo: groups' closing
    updates and alerts of the anomaly and silence detectors (rule source
    ``detections/stateful/*.py``), whose windows are judged by the watermark or wall-clock
    ticks: the demo exits a few seconds after the last alert, while offline replay ends by
    closing every open window and group."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "KLAXON_"))}
    env["KLAXON_CLUSTER"] = CLUSTER
    argv = [sys.executable, "-m", "klaxon", "demo", "--json", "--idle", "3"]
    argv += ["--min-severity", "informational"]
    done = subprocess.run(argv, env=env, capture_output=True, timeout=200, check=False)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    demo = [json.loads(line) for line in done.stdout.decode().splitlines() if line]

    settings = Settings.from_env({}).replace(cluster=CLUSTER)
    _, offline = offline_alerts(settings, list(iter_events(SAMPLE_PATH)))

    def timed(alert: dict[str, Any]) -> bool:
        source = str(alert["rule"].get("source", ""))
        group = alert.get("group") or {}
        closing = group.get("update", 0) > 0 and group.get("count") not in THRESHOLDS
        return closing or (source.startswith("detections/stateful/") and source.endswith(".py"))

    assert demo and offline
    assert {a["id"] for a in demo if not timed(a)} == {a["id"] for a in offline if not timed(a)}
    assert {a["id"] for a in demo if timed(a)} <= {a["id"] for a in offline if timed(a)}


def attack_steps() -> dict[str, str]:
    """auditID -> attack step (1a ... 7) from the sample's README table."""
    readme = (SAMPLE_PATH.parent / "README.md").read_text()
    rows = re.finditer(r"^\| (\d[a-c]?) \|[^\n]*?`([0-9a-f-]{36})` \|", readme, re.M)
    return {m.group(2): m.group(1) for m in rows}


def step_of(alert: dict[str, Any], steps: dict[str, str]) -> str | None:
    """The step whose request an alert is about: its own event's, else the first step
    among the events its group covers (a DaemonSet's pods belong to the DaemonSet's step)."""
    if alert.get("audit_id") in steps:
        return steps[alert["audit_id"]]
    covered = (alert.get("group") or {}).get("event_ids", [])
    return next((steps[e] for e in covered if e in steps), None)


def sample_alerts(grouping: bool) -> list[dict[str, Any]]:
    settings = Settings.from_env({}).replace(cluster=CLUSTER, grouping=grouping)
    return offline_alerts(settings, list(iter_events(SAMPLE_PATH)))[1]


def alerts_per_step(alerts: list[dict[str, Any]]) -> Counter[str]:
    steps = attack_steps()
    return Counter(s for a in alerts if (s := step_of(a, steps)) is not None)


def test_the_sample_attack_raises_at_most_three_alerts_per_step_and_loses_none() -> None:
    """The bundled attack with the shipped rules and default settings: every step that raised
    an alert one per match still raises one, and none raises more than 3 (one per match it
    was up to 17: a DaemonSet's pods, 10 deleted events, 7 rules on one pod)."""
    grouped = sample_alerts(True)
    before, after = alerts_per_step(sample_alerts(False)), alerts_per_step(grouped)
    assert len(before) >= 10 and max(before.values()) > 3
    assert set(after) == set(before)
    assert max(after.values()) <= 3, after


def test_the_sample_attacks_alerts_stack_into_one_incident_per_stolen_identity() -> None:
    """The storefront token's alerts (steps 1a-1c, the discovery correlation included) share
    one incident, the CI deployer's (steps 3-7, the RBAC-then-workload correlation
    included) another."""
    by_user: dict[str, set[str]] = {}
    steps = attack_steps()
    for alert in sample_alerts(True):
        if step_of(alert, steps) is not None:
            by_user.setdefault(alert["user"]["username"], set()).add(alert["incident"])
    storefront = "system:serviceaccount:storefront:storefront-web"
    deployer = "system:serviceaccount:ci:gitlab-deployer"
    assert len(by_user[storefront]) == 1 and len(by_user[deployer]) == 1
    assert by_user[storefront] != by_user[deployer]
