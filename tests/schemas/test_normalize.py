"""decode_payload: every accepted wire/cloud format, the event contract and the accounting."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.normalize import MAX_GUNZIPPED_BYTES, DecodeResult, decode_payload

FALCO = "falco-k8s-audit-traces"


def event(n: int = 0, **overrides: Any) -> dict[str, Any]:
    """A small valid audit event."""
    ev: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f"id-{n}",
        "stage": "ResponseComplete",
        "requestURI": "/api/v1/namespaces/default/pods",
        "verb": "list",
        "user": {"username": "alice", "groups": ["dev"]},
        "sourceIPs": ["10.0.0.1"],
        "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
        "responseStatus": {"code": 200},
        "stageTimestamp": "2026-01-01T00:00:00.000001Z",
    }
    ev.update(overrides)
    return ev


def dumps(doc: Any) -> bytes:
    return orjson.dumps(doc)


def assert_accounted(result: DecodeResult) -> None:
    """The accounting invariant: every item found has exactly one outcome."""
    assert result.found == len(result.events) + len(result.rejected) + sum(result.filtered.values())


# --- the corpus --------------------------------------------------------------------------


def test_every_falco_trace_decodes_except_the_malformed_one(corpus: Path) -> None:
    """All 46 Falco event files decode; fal_01_003 is rejected with a clear reason.

    45 files hold one event and one holds 6 JSON lines: 51 events (SOURCES.md says 52).
    """
    total = 0
    for path in sorted((corpus / FALCO).glob("*.json")):
        result = decode_payload(path.read_bytes())
        assert_accounted(result)
        if path.name == "fal_01_003.json":
            assert result.events == []
            assert [r.reason for r in result.rejected] == [
                "not an audit event: missing verb, auditID, stage"
            ]
            assert result.rejected[0].original == path.read_bytes().strip()
            continue
        assert result.rejected == [], path.name
        assert result.events, path.name
        for ev in result.events:
            assert ev["apiVersion"] == "audit.k8s.io/v1" and ev["kind"] == "Event"
            assert ev["cluster"] == "default"
        total += len(result.events)
    assert total == 51


def test_exec_and_attach_response_started_events_are_kept(corpus: Path) -> None:
    """exec/attach are only logged at ResponseStarted (code 101); they must not be dropped."""
    for name in ("exec_pod.json", "attach_pod.json"):
        (ev,) = decode_payload((corpus / FALCO / name).read_bytes()).events
        assert ev["stage"] == "ResponseStarted"
        assert ev["responseStatus"]["code"] == 101


@pytest.mark.parametrize(
    ("name", "events", "rejected", "cluster"),
    [
        ("aks-eventhub-record-kube-audit-dynatrace.json", 1, 0, "demo-aks"),
        ("gke-cloud-audit-logentry-k8s-activity-otel.json", 1, 0, "ensemble-k8s-dkohl"),
        ("k8s-audit-event-attach_cluster_admin_role-falco.json", 1, 0, "default"),
        ("k8s-audit-event-create_nginx_pod_sensitive_mount-falco.json", 1, 0, "default"),
        ("k8s-audit-event-exec_pod-falco.json", 1, 0, "default"),
        ("k8s-audit-event-v1beta1-privileged-pod-falco.json", 1, 0, "default"),
        # CloudTrail (not audit) messages, cut short in the sample: each one rejected.
        ("cloudwatch-subscription-filter-decoded-envelope-otel.json", 0, 3, None),
    ],
)
def test_format_samples(
    corpus: Path, name: str, events: int, rejected: int, cluster: str | None
) -> None:
    """Each formats/ sample yields the right number of events, with the envelope's cluster."""
    result = decode_payload((corpus / "formats" / name).read_bytes())
    assert_accounted(result)
    assert (len(result.events), len(result.rejected)) == (events, rejected)
    assert all(ev["cluster"] == cluster for ev in result.events)


def test_elastic_mixed_json_lines(corpus: Path) -> None:
    """Elastic's sample mixes plain events, a GKE LogEntry and an AKS record, one per line."""
    result = decode_payload(
        (corpus / "elastic-integrations-kubernetes-audit" / "test-audit.log").read_bytes(),
        cluster="fallback",
    )
    assert result.format == "jsonlines"
    assert [e["cluster"] for e in result.events] == [
        "fallback", "fallback", "fallback", "test-cluster", "test-aks",
    ]  # fmt: skip
    gke = result.events[3]
    assert (gke["verb"], gke["requestURI"], gke["user"]["username"]) == (
        "get", "/readyz", "system:gke-master-healthcheck",
    )  # fmt: skip
    assert result.events[4]["verb"] == "update"


def test_elastic_aks_record_with_string_log(corpus: Path) -> None:
    """An AKS record whose properties.log is a JSON string decodes to its event."""
    path = corpus / "elastic-integrations-kubernetes-audit" / "test-kube-audit.log"
    (ev,) = decode_payload(path.read_bytes()).events
    assert ev["auditID"] == "ad26f7bc-f1c6-4097-90f1-e0924e12f257"
    assert ev["cluster"] == "test-cluster"


def test_gke_logentry_is_mapped_to_audit_fields(corpus: Path) -> None:
    """GKE's AuditLog fields land on the audit Event fields rules use; the rest is kept."""
    path = corpus / "formats" / "gke-cloud-audit-logentry-k8s-activity-otel.json"
    (ev,) = decode_payload(path.read_bytes()).events
    assert ev["verb"] == "update"
    assert ev["auditID"] == "91515bc0-f1e8-4365-9bf5-e24ce587b653"
    assert ev["stage"] == "ResponseComplete"
    assert ev["objectRef"] == {
        "apiGroup": "coordination.k8s.io",
        "apiVersion": "v1",
        "namespace": "kube-system",
        "resource": "leases",
        "name": "gcp-controller-manager",
    }
    assert ev["requestURI"] == (
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/gcp-controller-manager"
    )
    assert ev["user"] == {"username": "system:gcp-controller-manager"}
    assert ev["sourceIPs"] == ["172.16.0.3"]
    assert ev["userAgent"].startswith("gcp-controller-manager/")
    assert ev["responseStatus"]["code"] == 200
    assert ev["annotations"]["authorization.k8s.io/decision"] == "allow"
    assert ev["stageTimestamp"] == "2025-08-15T12:54:34.966334Z"
    assert ev["gcpLogEntry"]["logName"].endswith("activity")


# --- shapes ------------------------------------------------------------------------------


def test_single_event_eventlist_array_and_json_lines_agree() -> None:
    """The four plain shapes of the same two events decode to the same events."""
    evs = [event(1), event(2, verb="delete")]
    shapes = {
        "event": dumps(evs[0]),
        "eventlist": dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": evs}),
        "array": dumps(evs),
        "jsonlines": b"\n".join(dumps(e) for e in evs) + b"\n\n",
    }
    for fmt, payload in shapes.items():
        result = decode_payload(payload)
        assert result.format == fmt
        expected = evs[:1] if fmt == "event" else evs
        assert [e["auditID"] for e in result.events] == [e["auditID"] for e in expected]
        assert_accounted(result)


def test_bad_json_line_rejects_that_line_only() -> None:
    """One broken line is rejected with its own bytes; its neighbours decode."""
    payload = dumps(event(1)) + b"\n{broken\n" + dumps(event(2)) + b"\n"
    result = decode_payload(payload)
    assert [e["auditID"] for e in result.events] == ["id-1", "id-2"]
    (bad,) = result.rejected
    assert bad.original == b"{broken" and bad.reason.startswith("invalid JSON line")


def test_bad_lines_are_rejected_in_their_order_around_good_ones() -> None:
    """Bad lines before the first good one and after it are each rejected, in line order,
    interleaved with the rejections of good JSON that is no event."""
    payload = b"{a\n[1\n" + dumps(event(1)) + b'\n{"kind":0}\n{b\n' + dumps(event(2))
    result = decode_payload(payload)
    assert result.format == "jsonlines"
    assert [e["auditID"] for e in result.events] == ["id-1", "id-2"]
    assert [r.original for r in result.rejected] == [b"{a", b"[1", b'{"kind":0}', b"{b"]
    assert [r.reason.split(":")[0] for r in result.rejected] == [
        "invalid JSON line",
        "invalid JSON line",
        "not an audit event",
        "invalid JSON line",
    ]
    assert_accounted(result)


def test_unparseable_document_is_one_rejection() -> None:
    """A broken pretty-printed document is one bad item, not one per line."""
    payload = b'{\n  "auditID": "x",\n  "verb": \n}\n'
    result = decode_payload(payload)
    assert result.found == 1 and result.rejected[0].original == payload
    assert result.rejected[0].reason.startswith("invalid JSON")


@pytest.mark.parametrize("payload", [b"", b"  \n\n", b"\xef\xbb\xbf"])
def test_empty_payloads_hold_no_items(payload: bytes) -> None:
    """Empty and whitespace-only payloads are zero items, not a rejection."""
    result = decode_payload(payload)
    assert (result.found, result.events, result.rejected) == (0, [], [])


def test_utf8_bom_is_ignored() -> None:
    """A leading byte-order mark does not break decoding."""
    assert len(decode_payload(b"\xef\xbb\xbf" + dumps(event())).events) == 1


def test_nested_arrays_and_envelopes_in_arrays() -> None:
    """Arrays may hold EventLists and envelopes; overly deep nesting is rejected."""
    payload = dumps([[event(1)], {"kind": "EventList", "items": [event(2)]}])
    assert [e["auditID"] for e in decode_payload(payload).events] == ["id-1", "id-2"]
    deep: Any = event(3)
    for _ in range(6):
        deep = [deep]
    result = decode_payload(dumps(deep))
    assert result.events == [] and "too deeply" in result.rejected[0].reason


# --- cloud envelopes ---------------------------------------------------------------------


AKS_ID = "/SUBSCRIPTIONS/S/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/"


def test_aks_records_filter_other_categories_and_take_cluster_per_record() -> None:
    """Non-audit categories are filtered (counted); each record names its own cluster."""
    payload = dumps(
        {
            "records": [
                {"category": "kube-audit", "resourceId": AKS_ID + "A",
                 "properties": {"log": dumps(event(1)).decode() + "\n"}},
                {"category": "kube-audit-admin", "resourceId": AKS_ID + "B",
                 "properties": {"log": event(2)}},
                {"category": "kube-apiserver", "properties": {"log": "I1127 klog line"}},
                {"category": "kube-audit", "properties": {"log": "{not json"}},
                {"category": "kube-audit", "properties": {}},
            ]
        }
    )  # fmt: skip
    result = decode_payload(payload, cluster="fallback")
    assert [(e["auditID"], e["cluster"]) for e in result.events] == [("id-1", "a"), ("id-2", "b")]
    assert result.filtered == {"aks-category:kube-apiserver": 1}
    assert result.rejected[0].original == b"{not json"
    assert "without properties.log" in result.rejected[1].reason
    assert_accounted(result)


def eks_envelope(messages: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "owner": "123456789012",
        "logGroup": "/aws/eks/prod-eu/cluster",
        "logStream": "kube-apiserver-audit-0123456789abcdef",
        "messageType": "DATA_MESSAGE",
        "logEvents": [{"id": str(i), "timestamp": 1, "message": m} for i, m in enumerate(messages)],
        **extra,
    }


def test_eks_subscription_payload_plain_and_gzip() -> None:
    """EKS CloudWatch payloads decode, gzip-compressed too, with the log group's cluster."""
    doc = eks_envelope([dumps(event(1)).decode(), dumps(event(2)).decode(), "[Truncated...]"])
    for payload, fmt in ((dumps(doc), "eks"), (gzip.compress(dumps(doc)), "gzip+eks")):
        result = decode_payload(payload, cluster="ignored")
        assert result.format == fmt
        assert [(e["auditID"], e["cluster"]) for e in result.events] == [
            ("id-1", "prod-eu"), ("id-2", "prod-eu"),
        ]  # fmt: skip
        assert result.rejected[0].original == b"[Truncated...]"
        assert_accounted(result)


def test_eks_non_audit_streams_and_control_messages_are_filtered() -> None:
    """Authenticator logs and CloudWatch control messages are counted, not rejected."""
    auth = eks_envelope(["time=x msg=y", "z"], logStream="authenticator-0123abcd")
    result = decode_payload(dumps(auth))
    assert result.filtered == {"eks-stream:authenticator": 2} and result.rejected == []
    control = eks_envelope(["CWL CONTROL MESSAGE: Checking health of destination"])
    control["messageType"] = "CONTROL_MESSAGE"
    assert decode_payload(dumps(control)).filtered == {"cloudwatch:control-message": 1}


def test_gzip_bombs_and_broken_gzip_are_rejected() -> None:
    """Gzip output is bounded; corrupt or truncated gzip is one rejection of the payload."""
    bomb = gzip.compress(b" " * (MAX_GUNZIPPED_BYTES + 10))
    result = decode_payload(bomb)
    assert result.found == 1 and "larger than" in result.rejected[0].reason
    truncated = gzip.compress(dumps(event()))[:-12]
    assert "gzip" in decode_payload(truncated).rejected[0].reason
    assert "gzip" in decode_payload(b"\x1f\x8bnot gzip at all").rejected[0].reason


def gke_entry(**pp: Any) -> dict[str, Any]:
    proto = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "serviceName": "k8s.io",
        "methodName": "io.k8s.core.v1.pods.exec.create",
        "resourceName": "core/v1/namespaces/default/pods/web/exec",
        "authenticationInfo": {"principalEmail": "mallory@example.com"},
        "status": {"code": 7, "message": "forbidden"},
        **pp,
    }
    return {
        "protoPayload": proto,
        "resource": {"type": "k8s_cluster", "labels": {"cluster_name": "gke-1"}},
        "timestamp": "2026-01-01T00:00:00Z",
        "operation": {"id": "op-1", "first": True, "last": False},
    }


def test_gke_status_stage_and_subresource_mapping() -> None:
    """gRPC codes map to HTTP, first-only entries are ResponseStarted, subresources parse."""
    (ev,) = decode_payload(dumps(gke_entry())).events
    assert ev["responseStatus"] == {"code": 403, "status": "Failure", "message": "forbidden"}
    assert ev["stage"] == "ResponseStarted"
    assert ev["objectRef"]["subresource"] == "exec" and ev["verb"] == "create"
    assert ev["cluster"] == "gke-1"


def test_gke_caller_ip_is_the_source_ip_in_either_spelling() -> None:
    """requestMetadata.callerIp (Cloud Audit Logs) and callerIP (some exporters) both map."""
    for key in ("callerIp", "callerIP"):
        entry = gke_entry(requestMetadata={key: "198.51.100.9", "callerSuppliedUserAgent": "k/1"})
        (ev,) = decode_payload(dumps(entry)).events
        assert ev["sourceIPs"] == ["198.51.100.9"] and ev["userAgent"] == "k/1"


def test_gke_non_kubernetes_services_are_filtered_and_bad_payloads_rejected() -> None:
    """GCP admin entries of other services are filtered; non-AuditLog payloads rejected."""
    other = decode_payload(dumps(gke_entry(serviceName="container.googleapis.com")))
    assert other.filtered == {"gke-service:container.googleapis.com": 1}
    bad = gke_entry()
    bad["protoPayload"]["@type"] = "type.googleapis.com/Other"
    assert "not a google.cloud.audit.AuditLog" in decode_payload(dumps(bad)).rejected[0].reason


def test_gke_request_bodies_are_redacted_and_not_kept_twice() -> None:
    """A Secret in a GKE request is redacted, and the kept LogEntry holds no copy of it."""
    entry = gke_entry(
        methodName="io.k8s.core.v1.secrets.create",
        resourceName="core/v1/namespaces/default/secrets",
        request={"@type": "core.k8s.io/v1.Secret", "kind": "Secret", "data": {"k": "c2VjcmV0"}},
        status={"code": 0},
    )
    (ev,) = decode_payload(dumps(entry)).events
    assert b"c2VjcmV0" not in dumps(ev)
    assert ev["responseStatus"]["code"] == 200


# --- the event contract ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"kind": 0}, "not an audit event: missing verb, auditID, stage"),
        ({"auditID": "x", "stage": "ResponseComplete"}, "not an audit event: missing verb"),
        (event(verb=""), "malformed audit event: verb is not a non-empty string"),
        (event(auditID=7), "malformed audit event: auditID is not a non-empty string"),
        (event(stage="Done"), "malformed audit event: unknown stage 'Done'"),
        (event(stage=["x"]), "malformed audit event: unknown stage ['x']"),
        (event(kind="Pod"), "not an audit event: kind 'Pod'"),
        (event(apiVersion="audit.k8s.io/v2"), "unsupported apiVersion 'audit.k8s.io/v2'"),
        (event(apiVersion=["x"]), "unsupported apiVersion ['x']"),
        (event(user="alice"), "malformed audit event: user is not an object"),
        (event(objectRef=[]), "malformed audit event: objectRef is not an object"),
        (event(responseStatus=3), "malformed audit event: responseStatus is not an object"),
        (event(sourceIPs="10.0.0.1"), "malformed audit event: sourceIPs is not an array"),
        (event(requestURI=5), "malformed audit event: requestURI is not a string"),
        (5, "not an audit event: JSON number"),
        ("text", "not an audit event: JSON string"),
        (None, "not an audit event: JSON null"),
    ],
)  # fmt: skip
def test_contract_violations_are_rejected_with_clear_reasons(doc: Any, reason: str) -> None:
    """Items that break the minimal event contract are rejected, saying why."""
    result = decode_payload(dumps(doc))
    assert result.events == []
    assert [r.reason for r in result.rejected] == [reason]
    assert result.rejected[0].original == dumps(doc)


def test_items_of_a_list_are_rejected_with_their_own_bytes() -> None:
    """A bad item inside an EventList is rejected alone, its original re-serialised."""
    payload = dumps({"kind": "EventList", "items": [event(1), {"kind": 0}, 3]})
    result = decode_payload(payload)
    assert len(result.events) == 1
    assert [r.original for r in result.rejected] == [b'{"kind":0}', b"3"]


@pytest.mark.parametrize("api_version", ["audit.k8s.io/v1beta1", None])
def test_old_and_versionless_events_become_v1(api_version: str | None) -> None:
    """v1beta1 and missing apiVersion are accepted and canonicalised."""
    raw = event()
    raw.pop("kind")
    if api_version is None:
        raw.pop("apiVersion")
    else:
        raw["apiVersion"] = api_version
    (ev,) = decode_payload(dumps(raw)).events
    assert (ev["apiVersion"], ev["kind"]) == ("audit.k8s.io/v1", "Event")


def test_request_received_is_filtered_unless_kept() -> None:
    """RequestReceived duplicates ResponseComplete: dropped and counted unless asked for."""
    payload = dumps([event(1, stage="RequestReceived"), event(1), event(2, stage="Panic")])
    dropped = decode_payload(payload)
    assert [e["stage"] for e in dropped.events] == ["ResponseComplete", "Panic"]
    assert dropped.filtered == {"stage:RequestReceived": 1}
    kept = decode_payload(payload, keep_request_received=True)
    assert len(kept.events) == 3 and kept.filtered == {}


def test_cluster_precedence() -> None:
    """Cluster: envelope, else the event's own, else the argument, else "default"."""
    assert decode_payload(dumps(event())).events[0]["cluster"] == "default"
    assert decode_payload(dumps(event()), cluster="c1").events[0]["cluster"] == "c1"
    own = dumps(event(cluster="own"))
    assert decode_payload(own, cluster="c1").events[0]["cluster"] == "own"
    wrapped = dumps(eks_envelope([own.decode()]))
    assert decode_payload(wrapped, cluster="c1").events[0]["cluster"] == "prod-eu"


def test_unknown_fields_are_kept() -> None:
    """Tolerant: fields we do not know pass through untouched."""
    (ev,) = decode_payload(dumps(event(metadata={"creationTimestamp": "t"}, timestamp="t"))).events
    assert ev["metadata"] == {"creationTimestamp": "t"} and ev["timestamp"] == "t"


# --- the accounting invariant, by property -----------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(
        st.sampled_from(
            ["kind", "items", "verb", "auditID", "stage", "records", "logEvents", "protoPayload",
             "properties", "log", "category", "message", "user", "objectRef", "x"]
        )
        | st.text(max_size=5),
        inner,
        max_size=5,
    ),
    max_leaves=20,
)  # fmt: skip

# An item and its expected outcome: "event", "rejected" or "filtered".
ITEMS = st.one_of(
    st.integers(0, 10**6).map(lambda n: (event(n), "event")),
    st.integers(0, 10**6).map(lambda n: (event(n, stage="RequestReceived"), "filtered")),
    st.just(({"kind": 0}, "rejected")),
    JSON_SCALARS.map(lambda v: (v, "rejected")),
    st.integers(0, 10**6).map(lambda n: (event(n, stage="Bogus"), "rejected")),
)


@st.composite
def payloads(draw: st.DrawFn) -> tuple[bytes, dict[str, int]]:
    """A payload of a random shape built from items whose outcome is known in advance."""
    items = draw(st.lists(ITEMS, min_size=0, max_size=8))
    shape = draw(st.sampled_from(["eventlist", "array", "jsonlines", "aks", "eks", "gzip"]))
    expected = {"event": 0, "rejected": 0, "filtered": 0}
    for _, outcome in items:
        expected[outcome] += 1
    docs = [doc for doc, _ in items]
    if shape == "eventlist":
        payload = dumps({"kind": "EventList", "items": docs})
    elif shape == "array":
        payload = dumps(docs)
    elif shape == "aks":
        payload = dumps({"records": [{"category": "kube-audit", "properties": {"log": d}}
                                     for d in docs]})  # fmt: skip
    elif shape == "eks":
        payload = dumps(eks_envelope([dumps(d).decode() for d in docs]))
    elif shape == "gzip":
        payload = gzip.compress(dumps(docs))
    else:
        garbage = draw(st.lists(st.text(alphabet="{[x", min_size=1, max_size=5), max_size=3))
        lines = [dumps(d) for d in docs] + [g.encode() for g in garbage]
        payload = b"\n".join(draw(st.permutations(lines)))
        if not docs and garbage:
            expected["rejected"] += 1  # nothing parses: one bad document
        else:
            expected["rejected"] += len(garbage)
    return payload, expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
def test_every_item_has_exactly_one_known_outcome(case: tuple[bytes, dict[str, int]]) -> None:
    """Over random mixes of shapes and items, outcomes match the items put in."""
    payload, expected = case
    result = decode_payload(payload)
    assert_accounted(result)
    got = {
        "event": len(result.events),
        "rejected": len(result.rejected),
        "filtered": sum(result.filtered.values()),
    }
    assert got == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_and_are_accounted(payload: bytes) -> None:
    """Arbitrary bytes never raise; whatever was found is accounted for."""
    assert_accounted(decode_payload(payload))


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_random_json_never_raises_and_is_accounted(doc: Any) -> None:
    """Arbitrary JSON (biased to our envelope keys) never raises and is accounted for."""
    result = decode_payload(dumps(doc))
    assert_accounted(result)
    for ev in result.events:
        assert ev["apiVersion"] == "audit.k8s.io/v1" and isinstance(ev["cluster"], str)


def test_rejected_items_too_deep_for_orjson_still_carry_json() -> None:
    """A bad item nested deeper than orjson writes keeps a JSON original (stdlib fallback)."""
    deep: Any = {"kind": 0}
    for _ in range(300):
        deep = {"x": deep}
    result = decode_payload(json.dumps({"kind": "EventList", "items": [deep]}).encode())
    (bad,) = result.rejected
    assert orjson.loads(bad.original) == deep
