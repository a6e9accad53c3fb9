"""Wire bytes -> canonical audit events (the hot path of the normalise agent).

`decode_payload` accepts everything a shipper may write to the raw topic (see
docs/architecture.md): a single `Event`, an `EventList`, a JSON array, JSON lines, AKS
diagnostic records, EKS CloudWatch Logs subscription payloads (gzip too) and GKE Cloud Audit
`LogEntry`s. Every item found ends up in exactly one of `events`, `rejected` or `filtered`.

No pydantic here: events stay the dicts `orjson` built, checked by hand against the minimal
contract (a JSON object with non-empty string `auditID` and `verb` and a known `stage`; if
present `kind` is `Event`, `apiVersion` is audit.k8s.io v1/v1beta1, `user`/`objectRef`/
`responseStatus`/`annotations`/`impersonatedUser` are objects, `sourceIPs` is a list and
`requestURI`/`userAgent` are strings), then canonicalised in place (`kind`, `apiVersion`,
`cluster`) and redacted (`schemas.redact`).

>>> r = decode_payload(b'{"kind":"EventList","items":[{"auditID":"a","stage":"ResponseComplete",'
...                    b'"verb":"get","requestURI":"/api"},{"kind":0}]}', cluster="prod")
>>> [(e["verb"], e["cluster"], e["apiVersion"]) for e in r.events]
[('get', 'prod', 'audit.k8s.io/v1')]
>>> r.rejected
[Rejected(reason='not an audit event: missing verb, auditID, stage', original=b'{"kind":0}')]
>>> r.found == len(r.events) + len(r.rejected) + sum(r.filtered.values())
True
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from time import thread_time_ns
from typing import Any

import orjson

from schemas.audit import ACCEPTED_API_VERSIONS, CANONICAL_API_VERSION, STAGES
from schemas.keys import DEFAULT_CLUSTER
from schemas.redact import NO_PATTERNS, Redaction, redact_events

GZIP_MAGIC = b"\x1f\x8b"
#: Largest decompressed gzip payload accepted (bytes); guards against decompression bombs.
MAX_GUNZIPPED_BYTES = 64 * 1024 * 1024
#: How deep JSON arrays may nest around events (Falco accepts arrays "recursively").
MAX_ARRAY_DEPTH = 4
AKS_AUDIT_CATEGORIES = frozenset({"kube-audit", "kube-audit-admin"})
GKE_AUDITLOG_TYPE = "type.googleapis.com/google.cloud.audit.AuditLog"
#: Key under which a GKE event keeps the rest of its original LogEntry.
GKE_ORIGINAL_KEY = "gcpLogEntry"

_STAGES = frozenset(STAGES)
_OBJECT_FIELDS = ("user", "objectRef", "responseStatus", "annotations", "impersonatedUser")
_STRING_FIELDS = ("requestURI", "userAgent")
# The classes a field may have (absent fields read as None): set lookups, no isinstance.
_OBJECT_OR_NONE = frozenset({dict, type(None)})
_STRING_OR_NONE = frozenset({str, type(None)})
_ARRAY_OR_NONE = frozenset({list, type(None)})
_BOM = b"\xef\xbb\xbf"

# google.rpc.Code -> HTTP status (https://github.com/googleapis/googleapis google/rpc/code.proto)
_GRPC_TO_HTTP = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400,
    10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rejected:
    """One unusable item: why, and its original bytes (for the dead-letter topic)."""

    reason: str
    original: bytes


@dataclass(slots=True)
class DecodeResult:
    """What one payload held. Invariant: `found == len(events) + len(rejected) + filtered`."""

    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    filtered: dict[str, int] = field(default_factory=dict)
    found: int = 0
    format: str = "empty"
    #: CPU nanoseconds (this thread's) spent redacting (the worker's stage timers).
    redact_ns: int = 0

    @property
    def accounted(self) -> int:
        """Items with an outcome; equals `found` (checked by the tests)."""
        return len(self.events) + len(self.rejected) + sum(self.filtered.values())


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def _deep_dumps(value: Any) -> bytes:
    """JSON for values nested deeper than orjson serialises (rare; rejected items only)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    except (RecursionError, ValueError, TypeError):
        return b'"<unserialisable: nested too deeply>"'


def _why_not_event(ev: dict[str, Any]) -> str:
    """The reason a dict failed the minimal event contract (slow path only)."""
    missing = [k for k in ("verb", "auditID", "stage") if ev.get(k) is None]
    problems: list[str] = []
    for key in ("verb", "auditID"):
        value = ev.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            problems.append(f"{key} is not a non-empty string")
    stage = ev.get("stage")
    if stage is not None and not (isinstance(stage, str) and stage in _STAGES):
        problems.append(f"unknown stage {stage!r}"[:120])
    if missing:
        head = "not an audit event: missing " + ", ".join(missing)
        return "; ".join([head, *problems])
    return "malformed audit event: " + "; ".join(problems)


def _why_malformed(ev: dict[str, Any]) -> str:
    """The first field of a would-be event that breaks the contract (slow path only)."""
    kind = ev.get("kind")
    if kind is not None and kind != "Event":
        return f"not an audit event: kind {kind!r}"[:160]
    api_version = ev.get("apiVersion")
    if api_version is not None and (
        api_version.__class__ is not str or api_version not in ACCEPTED_API_VERSIONS
    ):
        return f"unsupported apiVersion {api_version!r}"[:160]
    for name in _OBJECT_FIELDS:
        if ev.get(name).__class__ not in _OBJECT_OR_NONE:
            return f"malformed audit event: {name} is not an object"
    for name in _STRING_FIELDS:
        if ev.get(name).__class__ not in _STRING_OR_NONE:
            return f"malformed audit event: {name} is not a string"
    return "malformed audit event: sourceIPs is not an array"


def _aks_cluster(resource_id: Any) -> str | None:
    """Cluster name from an AKS `resourceId` (`.../MANAGEDCLUSTERS/<NAME>`), lower-cased.

    Azure upper-cases resource ids in diagnostic logs and names are case-insensitive.

    >>> _aks_cluster("/SUBSCRIPTIONS/x/RESOURCEGROUPS/rg/PROVIDERS/MICROSOFT.CONTAINERSERVICE/"
    ...              "MANAGEDCLUSTERS/DEMO-AKS")
    'demo-aks'
    """
    if not isinstance(resource_id, str):
        return None
    parts = resource_id.rstrip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() == "managedclusters":
            return parts[i + 1].lower() or None
    return None


def _eks_cluster(log_group: Any) -> str | None:
    """Cluster name from an EKS control-plane log group (`/aws/eks/<name>/cluster`).

    >>> _eks_cluster("/aws/eks/prod-eu/cluster"), _eks_cluster("CloudTrail")
    ('prod-eu', None)
    """
    if not isinstance(log_group, str):
        return None
    parts = log_group.split("/")
    if len(parts) == 5 and parts[:3] == ["", "aws", "eks"] and parts[4] == "cluster" and parts[3]:
        return parts[3]
    return None


def _is_version(seg: str) -> bool:
    """`v1`, `v1beta1`, `v2alpha3`."""
    if len(seg) < 2 or seg[0] != "v" or not seg[1].isdigit():
        return False
    rest = seg[1:].lstrip("0123456789")
    for tag in ("alpha", "beta"):
        if rest.startswith(tag) and rest[len(tag) :].isdigit():
            return True
    return rest == ""


def _gke_object(resource_name: str) -> tuple[dict[str, Any] | None, str]:
    """objectRef and requestURI rebuilt from a GKE `resourceName`.

    >>> _gke_object("core/v1/namespaces/default/pods/nginx/exec")
    ({'apiGroup': '', 'apiVersion': 'v1', 'namespace': 'default', 'resource': 'pods', \
'name': 'nginx', 'subresource': 'exec'}, '/api/v1/namespaces/default/pods/nginx/exec')
    >>> _gke_object("readyz")
    (None, '/readyz')
    """
    segs = resource_name.strip("/").split("/")
    if len(segs) < 3 or not _is_version(segs[1]):
        return None, "/" + resource_name.lstrip("/")
    group = "" if segs[0] == "core" else segs[0]
    ref: dict[str, Any] = {"apiGroup": group, "apiVersion": segs[1]}
    rest = segs[2:]
    if rest[0] == "namespaces" and len(rest) >= 3:
        ref["namespace"] = rest[1]
        rest = rest[2:]
    ref["resource"] = rest[0]
    if len(rest) > 1:
        ref["name"] = rest[1]
    if len(rest) > 2:
        ref["subresource"] = "/".join(rest[2:])
    prefix = f"/api/{segs[1]}" if not group else f"/apis/{group}/{segs[1]}"
    return ref, prefix + "/" + "/".join(segs[2:])


def gke_to_event(entry: dict[str, Any]) -> dict[str, Any] | str:
    """Map a GKE Cloud Audit `LogEntry` (k8s.io AuditLog) to an audit Event dict.

    Returns the event, or a string: the reason it cannot be one. Lossy where GKE is: user
    groups are not logged, the status code is mapped back from gRPC, the query string of
    `requestURI` is unknown. The rest of the LogEntry is kept under `gcpLogEntry`.
    """
    pp = entry.get("protoPayload")
    if not isinstance(pp, dict) or pp.get("@type") != GKE_AUDITLOG_TYPE:
        return "GKE LogEntry protoPayload is not a google.cloud.audit.AuditLog"
    method = pp.get("methodName")
    if not isinstance(method, str) or not method:
        return "GKE AuditLog without methodName"
    ev: dict[str, Any] = {"kind": "Event", "verb": method.rsplit(".", 1)[-1]}
    op = entry.get("operation")
    op = op if isinstance(op, dict) else {}
    audit_id = op.get("id") or entry.get("insertId")
    if isinstance(audit_id, str):
        ev["auditID"] = audit_id
    first, last = op.get("first"), op.get("last")
    ev["stage"] = "ResponseStarted" if first is True and last is not True else "ResponseComplete"
    request, response = pp.get("request"), pp.get("response")
    ev["level"] = (
        "RequestResponse" if response is not None else "Request" if request else "Metadata"
    )
    resource_name = pp.get("resourceName")
    if isinstance(resource_name, str) and resource_name:
        ref, uri = _gke_object(resource_name)
        ev["requestURI"] = uri
        if ref is not None:
            ev["objectRef"] = ref
    authn = pp.get("authenticationInfo")
    if isinstance(authn, dict) and isinstance(authn.get("principalEmail"), str):
        ev["user"] = {"username": authn["principalEmail"]}
    meta = pp.get("requestMetadata")
    if isinstance(meta, dict):
        _gke_caller(meta, ev)
    status = pp.get("status")
    if isinstance(status, dict):
        ev["responseStatus"] = _gke_status(status)
    if request is not None:
        ev["requestObject"] = request
    if response is not None:
        ev["responseObject"] = response
    if isinstance(entry.get("timestamp"), str):
        ev["stageTimestamp"] = entry["timestamp"]
    labels = entry.get("labels")
    if isinstance(labels, dict):
        ev["annotations"] = {k: v for k, v in labels.items() if isinstance(v, str)}
    rest_pp = {k: v for k, v in pp.items() if k not in ("request", "response")}
    ev[GKE_ORIGINAL_KEY] = {**entry, "protoPayload": rest_pp}
    return ev


def _gke_caller(meta: dict[str, Any], ev: dict[str, Any]) -> None:
    """`sourceIPs` and `userAgent` from a GKE AuditLog's `requestMetadata`."""
    # Cloud Audit Logs spell it callerIp; some exporters and hand-written samples callerIP.
    caller = meta.get("callerIp", meta.get("callerIP"))
    if isinstance(caller, str):
        ev["sourceIPs"] = [caller]
    if isinstance(meta.get("callerSuppliedUserAgent"), str):
        ev["userAgent"] = meta["callerSuppliedUserAgent"]


def _gke_status(status: dict[str, Any]) -> dict[str, Any]:
    """`responseStatus` from a GKE AuditLog's gRPC `status` (code mapped back to HTTP)."""
    grpc = status.get("code", 0)
    code = _GRPC_TO_HTTP.get(grpc, 500) if isinstance(grpc, int) else 500
    rs: dict[str, Any] = {"code": code, "status": "Success" if code < 400 else "Failure"}
    if isinstance(status.get("message"), str) and status["message"]:
        rs["message"] = status["message"]
    return rs


class _Decoder:
    """One payload's decoding state; all outcomes go through `_event`, `_reject`, `_filter`."""

    __slots__ = ("cluster", "keep_rr", "redaction", "result")

    def __init__(
        self, cluster: str | None, keep_request_received: bool, redaction: Redaction
    ) -> None:
        self.cluster = cluster or DEFAULT_CLUSTER
        self.keep_rr = keep_request_received
        self.redaction = redaction
        self.result = DecodeResult()

    # -- outcomes -------------------------------------------------------------------------

    def _reject(self, reason: str, origin: Any) -> None:
        if isinstance(origin, bytes):
            original = origin
        elif isinstance(origin, str):
            original = origin.encode("utf-8", "surrogatepass")
        else:
            try:
                original = orjson.dumps(origin)
            except orjson.JSONEncodeError:  # nested deeper than orjson writes (255)
                original = _deep_dumps(origin)
        self.result.rejected.append(Rejected(reason, original))

    def _count_filtered(self, reason: str) -> None:
        filtered = self.result.filtered
        filtered[reason] = filtered.get(reason, 0) + 1

    def _filter(self, reason: str) -> None:
        self.result.found += 1
        self._count_filtered(reason)

    def _event(self, ev: Any, origin: Any, env_cluster: str | None) -> None:
        """Validate and canonicalise one candidate event (the hot path; `decode` redacts).

        One boolean expression over the event's fields decides the common case; the reason
        of a failure is worked out only when there is one (`_why_malformed`)."""
        self.result.found += 1
        if ev.__class__ is not dict:
            self._reject(
                f"not an audit event: JSON {_type_name(ev)}", ev if origin is None else origin
            )
            return
        get = ev.get
        verb = get("verb")
        stage = get("stage")
        audit_id = get("auditID")
        if not (
            verb.__class__ is str
            and verb
            and audit_id.__class__ is str
            and audit_id
            and stage.__class__ is str
            and stage in _STAGES
        ):
            self._reject(_why_not_event(ev), ev if origin is None else origin)
            return
        kind = get("kind")
        api_version = get("apiVersion")
        if not (
            (kind is None or kind == "Event")
            and (
                api_version is None
                or (api_version.__class__ is str and api_version in ACCEPTED_API_VERSIONS)
            )
            and get("user").__class__ in _OBJECT_OR_NONE
            and get("objectRef").__class__ in _OBJECT_OR_NONE
            and get("responseStatus").__class__ in _OBJECT_OR_NONE
            and get("annotations").__class__ in _OBJECT_OR_NONE
            and get("impersonatedUser").__class__ in _OBJECT_OR_NONE
            and get("requestURI").__class__ in _STRING_OR_NONE
            and get("userAgent").__class__ in _STRING_OR_NONE
            and get("sourceIPs").__class__ in _ARRAY_OR_NONE
        ):
            self._reject(_why_malformed(ev), ev if origin is None else origin)
            return
        if stage == "RequestReceived" and not self.keep_rr:
            self._count_filtered("stage:RequestReceived")
            return
        if kind is None:
            ev["kind"] = "Event"
        if api_version != CANONICAL_API_VERSION:
            ev["apiVersion"] = CANONICAL_API_VERSION
        if env_cluster is None:
            own = get("cluster")
            env_cluster = own if own.__class__ is str and own else self.cluster
        ev["cluster"] = env_cluster
        self.result.events.append(ev)  # redacted by `decode`, all in one go

    def _reject_item(self, reason: str, origin: Any) -> None:
        self.result.found += 1
        self._reject(reason, origin)

    # -- shapes ---------------------------------------------------------------------------

    def dispatch(self, doc: Any, origin: bytes | None, depth: int = 0) -> str:
        """Route one parsed JSON document to its shape handler; returns the shape name."""
        if doc.__class__ is dict:
            if doc.get("kind") == "EventList":
                items = doc.get("items")
                if items is None:
                    return "eventlist"  # an empty list serialises without items
                if items.__class__ is not list:
                    self._reject_item("EventList items is not an array", origin or doc)
                    return "eventlist"
                for item in items:
                    self._event(item, None, None)
                return "eventlist"
            if "verb" in doc or "auditID" in doc:
                self._event(doc, origin, None)
                return "event"
            if "records" in doc:
                self._aks(doc, origin)
                return "aks"
            if "logEvents" in doc:
                self._eks(doc, origin)
                return "eks"
            if "protoPayload" in doc:
                self._gke(doc, origin)
                return "gke"
            if doc.get("properties").__class__ is dict and (
                "category" in doc or "resourceId" in doc
            ):
                self._aks_record(doc, origin, _aks_cluster(doc.get("resourceId")))
                return "aks"
            self._event(doc, origin, None)
            return "event"
        if doc.__class__ is list:
            if depth >= MAX_ARRAY_DEPTH:
                self._reject_item("JSON arrays nested too deeply", origin or doc)
                return "array"
            for item in doc:
                if item.__class__ is dict and "verb" in item:
                    self._event(item, None, None)
                else:
                    self.dispatch(item, None, depth + 1)
            return "array"
        self._event(doc, origin, None)
        return "event"

    def _aks(self, doc: dict[str, Any], origin: bytes | None) -> None:
        records = doc.get("records")
        if records.__class__ is not list:
            self._reject_item("AKS records is not an array", origin or doc)
            return
        for rec in records:
            if rec.__class__ is not dict:
                self._reject_item(f"AKS record is a JSON {_type_name(rec)}", rec)
                continue
            self._aks_record(rec, None, _aks_cluster(rec.get("resourceId")))

    def _aks_record(self, rec: dict[str, Any], origin: bytes | None, cluster: str | None) -> None:
        category = rec.get("category")
        if category is not None and (
            category.__class__ is not str or category not in AKS_AUDIT_CATEGORIES
        ):
            self._filter(f"aks-category:{category}"[:80])
            return
        props = rec.get("properties")
        log = props.get("log") if props.__class__ is dict else None
        if log.__class__ is str:
            try:
                ev = orjson.loads(log)
            except orjson.JSONDecodeError as exc:
                self._reject_item(f"invalid JSON in AKS properties.log: {exc}", log)
                return
            self._event(ev, log, cluster)
        elif log.__class__ is dict:
            self._event(log, origin or rec, cluster)
        else:
            self._reject_item("AKS record without properties.log", origin or rec)

    def _eks(self, doc: dict[str, Any], origin: bytes | None) -> None:
        log_events = doc.get("logEvents")
        if log_events.__class__ is not list:
            self._reject_item("CloudWatch logEvents is not an array", origin or doc)
            return
        cluster = _eks_cluster(doc.get("logGroup"))
        stream = doc.get("logStream")
        skip = None
        if doc.get("messageType") == "CONTROL_MESSAGE":
            skip = "cloudwatch:control-message"
        elif cluster and isinstance(stream, str) and not stream.startswith("kube-apiserver-audit"):
            skip = f"eks-stream:{stream.rsplit('-', 1)[0]}"[:80]
        for log_event in log_events:
            if skip is not None:
                self._filter(skip)
                continue
            message = log_event.get("message") if log_event.__class__ is dict else None
            if message.__class__ is not str:
                self._reject_item("CloudWatch log event without a message string", log_event)
                continue
            try:
                ev = orjson.loads(message)
            except orjson.JSONDecodeError as exc:
                self._reject_item(f"invalid JSON in CloudWatch message: {exc}", message)
                continue
            self._event(ev, message, cluster)

    def _gke(self, entry: dict[str, Any], origin: bytes | None) -> None:
        pp = entry.get("protoPayload")
        if pp.__class__ is dict:
            service = pp.get("serviceName")
            if pp.get("@type") == GKE_AUDITLOG_TYPE and service != "k8s.io":
                self._filter(f"gke-service:{service}"[:80])
                return
        mapped = gke_to_event(entry)
        if isinstance(mapped, str):
            self._reject_item(mapped, origin or entry)
            return
        labels = entry.get("resource")
        labels = labels.get("labels") if labels.__class__ is dict else None
        cluster = labels.get("cluster_name") if labels.__class__ is dict else None
        self._event(
            mapped, origin or entry, cluster if isinstance(cluster, str) and cluster else None
        )

    # -- bytes ----------------------------------------------------------------------------

    def decode(self, payload: bytes) -> DecodeResult:
        """The payload's events, redacted in one pass at the end (timed: the worker reports
        redaction as a stage of its own)."""
        result = self._decode(payload)
        started = thread_time_ns()
        redact_events(result.events, self.redaction)
        result.redact_ns = thread_time_ns() - started
        return result

    def _decode(self, payload: bytes) -> DecodeResult:
        result = self.result
        prefix = ""
        if payload[:2] == GZIP_MAGIC:
            prefix = "gzip+"
            inflater = zlib.decompressobj(wbits=31)
            try:
                data = inflater.decompress(payload, MAX_GUNZIPPED_BYTES + 1)
            except zlib.error as exc:
                result.format = "gzip"
                self._reject_item(f"invalid gzip: {exc}", payload)
                return result
            if len(data) > MAX_GUNZIPPED_BYTES:
                result.format = "gzip"
                self._reject_item(f"gzip payload larger than {MAX_GUNZIPPED_BYTES} bytes", payload)
                return result
            if not inflater.eof:
                result.format = "gzip"
                self._reject_item("truncated gzip payload", payload)
                return result
            payload = data
        if payload[:3] == _BOM:
            payload = payload[3:]
        if not payload or payload.isspace():
            result.format = prefix + "empty"
            return result
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            result.format = prefix + "jsonlines"
            self._lines(payload, exc)
            return result
        result.format = prefix + self.dispatch(doc, payload)
        return result

    def _lines(self, payload: bytes, whole_error: orjson.JSONDecodeError) -> None:
        """JSON lines; a payload where no line parses is one bad document, not N bad lines.

        One pass: lines that fail before the first good one wait in `pending` (they become
        bad lines once a good one is seen, in their order); a plain event skips `dispatch`.
        """
        loads = orjson.loads
        event = self._event
        pending: list[tuple[bytes, orjson.JSONDecodeError]] | None = []
        for raw in payload.split(b"\n"):
            line = raw.strip()
            if not line:
                continue
            try:
                doc = loads(line)
            except orjson.JSONDecodeError as exc:
                if pending is None:
                    self._reject_item(f"invalid JSON line: {exc}", line)
                else:
                    pending.append((line, exc))
                continue
            if pending is not None:
                for bad, error in pending:
                    self._reject_item(f"invalid JSON line: {error}", bad)
                pending = None
            if doc.__class__ is dict and "verb" in doc and doc.get("kind") != "EventList":
                event(doc, line, None)  # what `dispatch` would do, without its other checks
            else:
                self.dispatch(doc, line)
        if pending is not None:
            self.result.format = "json"
            self._reject_item(f"invalid JSON: {whole_error}", payload)


def decode_payload(
    payload: bytes,
    *,
    cluster: str | None = None,
    keep_request_received: bool = False,
    redaction: Redaction = NO_PATTERNS,
) -> DecodeResult:
    """Decode one raw message into canonical, redacted audit events.

    `cluster` names the source cluster when neither the envelope (AKS resourceId, EKS log
    group, GKE cluster_name) nor the event itself says; the default is ``"default"``.
    `RequestReceived` events are dropped (counted in `filtered`) unless asked to keep them.
    `redaction` adds operator patterns to the built-in redaction (`schemas.redact`).
    Never raises on bad input: unusable items are returned in `rejected`.

    >>> r = decode_payload(b'{"auditID":"x","stage":"RequestReceived","verb":"get"}\\n\\nnope\\n')
    >>> r.format, len(r.events), r.filtered, [x.reason[:12] for x in r.rejected]
    ('jsonlines', 0, {'stage:RequestReceived': 1}, ['invalid JSON'])
    """
    return _Decoder(cluster, keep_request_received, redaction).decode(payload)
