"""Specification of the bundled sample audit log (`replay/sample/`).

The expectations here are written out by hand (counts, the attacker's requests in order, the
look-alikes), not read back from the generator, so a change to the story shows up as a failing
test and a README to update.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from replay.sample import MALFORMED_PATH, SAMPLE_PATH
from replay.sample.generate import (
    ATTACKER_IP,
    MALFORMED_LAYOUT,
    build_sample,
    main,
    timeline_markdown,
)
from schemas import AuditEvent

README = SAMPLE_PATH.with_name("README.md")

#: The documented size of the sample (README "At a glance").
EVENT_COUNT = 4611
FIRST_STAGE_TS = "2026-11-24T14:00:00.260698Z"
LAST_STAGE_TS = "2026-11-24T14:29:59.907050Z"

#: Every request from the attacker's IP, in log order: verb, target, code.
ATTACK = (
    """
create selfsubjectrulesreviews 201
list nodes 403
list pods 403
list deployments 403
list daemonsets 403
list namespaces 403
list kube-system/configmaps 403
list clusterroles 403
list clusterrolebindings 403
list kube-system/serviceaccounts 403
list kube-system/roles 403
list cronjobs 403
list kube-system/pods 403
list secrets 200
get ci/secrets/gitlab-deployer-token 200
get /api 200
get /apis 200
create kube-system/pods/kube-proxy-upgrade-7d4f 201
create kube-system/pods/kube-proxy-upgrade-7d4f/exec 101
create kube-system/pods/kube-proxy-upgrade-7d4f/exec 101
create kube-system/serviceaccounts/metrics-agent 201
create clusterrolebindings/metrics-agent 201
create kube-system/secrets/metrics-agent-token 201
create kube-system/daemonsets/node-metrics-agent 201
list kube-system/events 200
"""
    + "delete kube-system/events 200\n" * 10
)


def _target(ev: dict[str, Any]) -> str:
    ref = ev.get("objectRef")
    if ref is None:
        return str(urlsplit(ev["requestURI"]).path)
    parts = (ref.get("namespace"), ref["resource"], ref.get("name"), ref.get("subresource"))
    return "/".join(p for p in parts if p)


@pytest.fixture(scope="module")
def events() -> list[dict[str, Any]]:
    """The committed sample, parsed."""
    with gzip.open(SAMPLE_PATH, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _commands(ev: dict[str, Any]) -> list[str]:
    return [v for k, v in parse_qsl(urlsplit(ev["requestURI"]).query) if k == "command"]


def test_regenerating_gives_the_committed_bytes(tmp_path: Path) -> None:
    """Running the generator again reproduces both committed files exactly."""
    out, bad = tmp_path / "sample.jsonl.gz", tmp_path / "malformed.jsonl"
    assert main(["--out", str(out), "--malformed-out", str(bad)]) == 0
    assert bad.read_bytes() == MALFORMED_PATH.read_bytes()
    fresh, committed = out.read_bytes(), SAMPLE_PATH.read_bytes()
    assert gzip.decompress(fresh) == gzip.decompress(committed)
    if fresh != committed:  # same content: only the deflate stream differs
        pytest.skip("this zlib compresses differently from the one that made the committed file")


def test_two_runs_are_byte_identical(tmp_path: Path) -> None:
    """Two generator runs write the same gzip bytes (no clock, no file name in the header)."""
    first, second = tmp_path / "a" / "s.gz", tmp_path / "b" / "other-name.gz"
    for path in (first, second):
        path.parent.mkdir()
        main(["--out", str(path), "--malformed-out", str(path.with_suffix(".bad"))])
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes()[4:8] == b"\0\0\0\0"  # gzip MTIME field


def test_every_line_is_an_audit_event(events: list[dict[str, Any]]) -> None:
    """Each line is an audit.k8s.io/v1 Event with the fields a real apiserver fills in."""
    micro = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    uuid4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    for ev in events:
        AuditEvent.model_validate(ev)
        assert (ev["kind"], ev["apiVersion"]) == ("Event", "audit.k8s.io/v1")
        assert ev["stage"] in ("ResponseComplete", "ResponseStarted")
        assert ev["level"] in ("Metadata", "Request", "RequestResponse")
        assert uuid4.match(ev["auditID"]), ev["auditID"]
        assert micro.match(ev["requestReceivedTimestamp"]) and micro.match(ev["stageTimestamp"])
        assert ev["requestReceivedTimestamp"] <= ev["stageTimestamp"]
        assert ev["sourceIPs"] and ev["userAgent"] and ev["user"]["username"]
        assert ev["annotations"]["authorization.k8s.io/decision"] in ("allow", "forbid")
        assert "authorization.k8s.io/reason" in ev["annotations"]
        assert ("objectRef" in ev) == (
            not ev["requestURI"].startswith(("/livez", "/readyz", "/metrics", "/api?", "/apis?"))
        )
        if ev["level"] != "RequestResponse":
            assert "responseObject" not in ev


def test_count_span_and_order_are_as_documented(events: list[dict[str, Any]]) -> None:
    """4611 events whose stageTimestamps run from 14:00:00 to 14:30:00 in file order."""
    assert len(events) == EVENT_COUNT
    stamps = [ev["stageTimestamp"] for ev in events]
    assert stamps == sorted(stamps)
    assert (stamps[0], stamps[-1]) == (FIRST_STAGE_TS, LAST_STAGE_TS)
    readme = README.read_text()
    assert f"{EVENT_COUNT:,} events" in readme
    assert FIRST_STAGE_TS in readme and LAST_STAGE_TS in readme


def test_mix_looks_like_a_busy_cluster(events: list[dict[str, Any]]) -> None:
    """Mostly ResponseComplete, mostly control-plane traffic, bodies only for writes."""
    stages = Counter(ev["stage"] for ev in events)
    assert stages["ResponseComplete"] > 0.9 * len(events)
    users = Counter(ev["user"]["username"] for ev in events)
    assert users["system:kube-controller-manager"] > 500 and users["system:kube-scheduler"] > 500
    assert sum(n for u, n in users.items() if u.startswith("system:node:")) > 1000
    assert {"jane.doe@example.com", "raj.patel@example.com", "mei.chen@example.com"} <= set(users)
    watches = [ev for ev in events if ev["verb"] == "watch"]
    assert len(watches) > 300
    for ev in events:
        if "requestObject" in ev:
            assert ev["verb"] not in ("get", "list", "watch")
    ids = Counter(ev["auditID"] for ev in events)
    for audit_id, n in ids.items():  # one id per request; a watch logs two stages
        assert n == 1 or {e["stage"] for e in events if e["auditID"] == audit_id} == {
            "ResponseStarted",
            "ResponseComplete",
        }


def test_attacker_requests_are_the_documented_story_in_order(
    events: list[dict[str, Any]],
) -> None:
    """Every request from the attacker's IP, in order, is exactly the documented story."""
    seen = [
        f"{ev['verb']} {_target(ev) if ev['verb'] != 'delete' else 'kube-system/events'} "
        f"{ev['responseStatus']['code']}"
        for ev in events
        if ATTACKER_IP in ev["sourceIPs"]
    ]
    assert seen == ATTACK.strip().splitlines()
    story = build_sample().story
    assert [s.audit_id for s in story] == [
        ev["auditID"] for ev in events if ATTACKER_IP in ev["sourceIPs"]
    ]
    assert [s.step for s in story][:2] == ["1a", "1b"] and story[-1].step == "7"
    assert story[0].time.startswith("2026-11-24T14:11:02") and story[-1].time < "2026-11-24T14:22"


def test_readme_carries_the_generated_timelines() -> None:
    """README.md holds the attack and look-alike tables exactly as the generator prints them."""
    sample = build_sample()
    readme = README.read_text()
    assert timeline_markdown(sample.story) in readme
    assert timeline_markdown(sample.benign) in readme


def test_attack_steps_carry_the_details_rules_need(events: list[dict[str, Any]]) -> None:
    """The attack's bodies and URIs hold what each detection looks at."""
    attacker = [ev for ev in events if ATTACKER_IP in ev["sourceIPs"]]
    by_target = {(_target(ev), ev["verb"]): ev for ev in attacker}
    stolen = attacker[0]["user"]
    assert stolen["username"] == "system:serviceaccount:storefront:storefront-web"
    pod_name = stolen["extra"]["authentication.kubernetes.io/pod-name"][0]
    assert pod_name.startswith("storefront-web-") and f"`{pod_name}`" in README.read_text()
    assert attacker[0]["userAgent"] == "curl/8.5.0"
    assert (
        sum(ev["annotations"]["authorization.k8s.io/decision"] == "forbid" for ev in attacker) == 12
    )

    pod = by_target[("kube-system/pods/kube-proxy-upgrade-7d4f", "create")]
    spec = pod["requestObject"]["spec"]
    assert spec["hostPID"] and spec["hostNetwork"] and spec["hostIPC"]
    assert spec["containers"][0]["securityContext"]["privileged"] is True
    assert {"name": "host", "hostPath": {"path": "/", "type": ""}} in spec["volumes"]
    assert pod["user"]["username"] == "system:serviceaccount:ci:gitlab-deployer"
    assert not pod["userAgent"].startswith("kubectl/")

    execs = [ev for ev in attacker if ev.get("objectRef", {}).get("subresource") == "exec"]
    assert [(ev["stage"], ev["responseStatus"]["code"]) for ev in execs] == [
        ("ResponseStarted", 101)
    ] * 2
    assert [_commands(ev) for ev in execs] == [
        ["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"],
        ["/bin/sh"],
    ]

    crb = by_target[("clusterrolebindings/metrics-agent", "create")]["requestObject"]
    assert crb["roleRef"]["name"] == "cluster-admin"
    assert crb["subjects"] == [
        {"kind": "ServiceAccount", "name": "metrics-agent", "namespace": "kube-system"}
    ]
    ds = by_target[("kube-system/daemonsets/node-metrics-agent", "create")]["requestObject"]
    assert "xmrig" in ds["spec"]["template"]["spec"]["containers"][0]["image"]

    created_events = {
        ev["objectRef"]["name"]
        for ev in events
        if ev["verb"] == "create"
        and ev["objectRef"].get("resource") == "events"
        and ev["objectRef"].get("name")
    }
    deleted = [ev["objectRef"]["name"] for ev in attacker if ev["verb"] == "delete"]
    assert deleted and set(deleted) <= created_events  # it deletes events that were recorded


def test_benign_lookalikes_are_present(events: list[dict[str, Any]]) -> None:
    """The look-alikes rules must tolerate are in the log as documented."""
    benign = {s.audit_id: s for s in build_sample().benign}
    assert len(benign) == 11
    picked = [ev for ev in events if ev["auditID"] in benign]
    cni = [
        ev
        for ev in picked
        if ev["objectRef"].get("resource") == "pods"
        and ev["objectRef"]["namespace"] == "kube-system"
    ]
    assert len(cni) == 2
    for ev in cni:
        assert ev["user"]["username"] == "system:serviceaccount:kube-system:daemon-set-controller"
        spec = ev["requestObject"]["spec"]
        assert spec["hostNetwork"] and any("hostPath" in v for v in spec["volumes"])
        assert spec["containers"][0]["securityContext"]["privileged"] is True
    sre_execs = [ev for ev in picked if ev["objectRef"].get("subresource") == "exec"]
    assert {ev["user"]["username"] for ev in sre_execs} == {"jane.doe@example.com"}
    assert not any(
        c in ("sh", "/bin/sh", "bash", "/bin/bash") for ev in sre_execs for c in _commands(ev)
    )
    viewed = {_target(ev) for ev in picked if ev["verb"] == "get"}
    assert viewed == {"clusterroles/cluster-admin", "clusterrolebindings/cluster-admin"}
    bindings = [
        ev
        for ev in events
        if ev.get("objectRef", {}).get("resource") == "clusterrolebindings"
        and ev["verb"] in ("create", "update", "patch")
    ]
    assert [ev["sourceIPs"] for ev in bindings] == [[ATTACKER_IP]]  # only the attacker binds


def test_secret_bodies_exercise_redaction(events: list[dict[str, Any]]) -> None:
    """Secret bodies with data are in the log, and the normaliser redacts every value."""
    from schemas.normalize import decode_payload

    with_data = [
        ev
        for ev in events
        if ev.get("objectRef", {}).get("resource") == "secrets"
        and isinstance(ev.get("requestObject", {}).get("data"), dict)
    ]
    assert len(with_data) >= 3
    values = {v for ev in with_data for v in ev["requestObject"]["data"].values()}
    result = decode_payload(SAMPLE_PATH.read_bytes())
    assert len(result.events) == EVENT_COUNT and not result.rejected
    normalised = json.dumps(result.events)
    assert not [v for v in values if v in normalised]


def test_malformed_companion_is_as_documented() -> None:
    """malformed.jsonl: 7 lines, 3 valid events between 4 unusable lines, as README says."""
    lines = MALFORMED_PATH.read_bytes().splitlines()
    assert len(lines) == len(MALFORMED_LAYOUT) == 7
    outcomes = []
    for line in lines:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            outcomes.append("rejected")
            continue
        ok = isinstance(obj, dict) and obj.get("kind") == "Event" and "verb" in obj
        outcomes.append("accepted" if ok else "rejected")
    assert outcomes == [outcome for _, outcome in MALFORMED_LAYOUT]
    assert lines[3] == b'{"kind": 0}'
    readme = README.read_text()
    assert "3 valid events" in readme and "4 unusable lines" in readme


def test_malformed_companion_through_the_normaliser() -> None:
    """The normaliser keeps the 3 valid events and rejects the other 4 lines, one each."""
    from schemas.normalize import decode_payload

    result = decode_payload(MALFORMED_PATH.read_bytes())
    assert len(result.events) == 3
    assert [r.original for r in result.rejected] == [
        line
        for line, (_, outcome) in zip(
            MALFORMED_PATH.read_bytes().splitlines(), MALFORMED_LAYOUT, strict=True
        )
        if outcome == "rejected"
    ]
