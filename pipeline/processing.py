"""What the two agents do to one Kafka message, without Kafka (pure core, thin shell).

`normalise_message` turns one raw-topic message into events-topic messages (one per
partition of the ``cluster|user`` key, split only if too big) and dead letters;
`detect_message` turns one events-topic message into alerts and dead letters. Both return
plain data (`Outgoing` key/value pairs plus counts) that `pipeline.agents` sends, so every
decision the worker makes is testable here, and neither ever raises on bad input: whatever
cannot be used becomes a dead letter with its reason.

>>> from types import SimpleNamespace
>>> raw = (b'{"auditID":"a1","stage":"ResponseComplete","verb":"get","requestURI":"/api",'
...        b'"user":{"username":"alice"}}\\nnot json')
>>> n = normalise_message(raw, Source("raw", 0, 5), partitions=4, cluster="prod")
>>> n.events_in, n.normalised, len(n.dead_letters), len(n.messages)
(2, 1, 1, 1)
>>> orjson.loads(n.dead_letters[0])["source"]
{'topic': 'raw', 'partition': 0, 'offset': 5}
>>> engine = SimpleNamespace(evaluate_batch=lambda evs: [("rule", e) for e in evs])
>>> d = detect_message(n.messages[0].value, Source("events", 1, 0), engine,
...                    lambda m: {"id": "x-" + m[1]["auditID"]})
>>> [(a.key, orjson.loads(a.value)) for a in d.alerts]
[(b'x-a1', {'id': 'x-a1'})]
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from pipeline.routing import event_key, group_by_partition
from pipeline.stages import StageTimes
from schemas.deadletter import dead_letter
from schemas.normalize import decode_payload
from schemas.redact import NO_PATTERNS, Redaction

__all__ = [
    "BODY_FIELDS",
    "EMPTY_MESSAGE",
    "EVENTS_MESSAGE_VERSION",
    "MAX_DEADLETTER_ORIGINAL",
    "MAX_MESSAGE_BYTES",
    "DetectResult",
    "EngineLike",
    "NormaliseResult",
    "Outgoing",
    "Source",
    "cut_bodies",
    "dead_letter_bytes",
    "decode_events_message",
    "describe_error",
    "detect_message",
    "encode_events_messages",
    "normalise_message",
]

#: Value of ``v`` in every events-topic message this version writes and accepts.
EVENTS_MESSAGE_VERSION = 1
#: Events messages are split so each value stays under this (Kafka's default limit is 1 MB).
MAX_MESSAGE_BYTES = 900_000
#: Originals longer than this are truncated in dead letters (base64 grows them by 4/3).
MAX_DEADLETTER_ORIGINAL = 600_000
#: Filter reason of a raw message that is empty or only white space.
EMPTY_MESSAGE = "empty-message"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message was read from (for dead letters and lag)."""

    topic: str
    partition: int | None
    offset: int | None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to produce: optional explicit partition, key and value bytes.

    Events messages also carry the events they encode and, for partitions this worker
    consumes, the engine's matches of them (neither is sent: `pipeline.handoff`), alert
    messages the alert document (`pipeline.sinks`).
    """

    key: bytes | None
    value: bytes
    partition: int | None = None
    events: list[dict[str, Any]] | None = field(default=None, compare=False, repr=False)
    #: The stateless engine's matches of `events`, in its order, when the normalise agent
    #: evaluated them while they were still in the CPU's caches.
    matches: list[Any] | None = field(default=None, compare=False, repr=False)
    #: The alert document an alert message encodes (for sinks writing other formats).
    doc: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    headers: list[tuple[str, bytes]] | None = field(default=None, compare=False, repr=False)


class EngineLike(Protocol):
    """The part of `detections.Engine` the detect agent uses."""

    def evaluate_batch(self, events: list[dict[str, Any]]) -> Sequence[Any]: ...


@dataclass(slots=True)
class NormaliseResult:
    """Outcome of one raw message. ``events_in == normalised + dead + sum(filtered)``."""

    messages: list[Outgoing] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)
    events_in: int = 0
    normalised: int = 0
    filtered: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class DetectResult:
    """Outcome of one events message: alerts to send and what could not be evaluated."""

    alerts: list[Outgoing] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)
    events: int = 0
    errors: int = 0
    #: The newest ``stageTimestamp`` of the message (RFC 3339 text; the alert grouper's clock).
    latest: str | None = None


def dead_letter_bytes(reason: str, original: bytes, source: Source) -> bytes:
    """An encoded dead letter; huge originals are truncated so the letter stays sendable."""
    if len(original) > MAX_DEADLETTER_ORIGINAL:
        reason = f"{reason} (original truncated from {len(original)} bytes)"
        original = original[:MAX_DEADLETTER_ORIGINAL]
    letter = dead_letter(
        reason, original, topic=source.topic, partition=source.partition, offset=source.offset
    )
    return orjson.dumps(letter)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` plus the innermost frame, short enough for a dead-letter reason."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}"[:300] + where


def encode_events_messages(
    events: list[dict[str, Any]],
    partition: int,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    rejected: list[tuple[str, dict[str, Any]]] | None = None,
) -> list[Outgoing]:
    """``{"v":1,"events":[...]}`` messages for one partition, halved until under ``max_bytes``.

    The key is the first event's routing key (informative: the partition is explicit). An
    event that alone exceeds ``max_bytes``, or that orjson cannot encode (nested deeper than
    it allows), travels without its request and response bodies (`cut_bodies`); if it still
    does not fit it is left out and listed in ``rejected`` with the reason (raises
    `ValueError` when no list is given).

    >>> evs = [{"cluster": "c", "user": {"username": "u"}, "pad": "x" * 100}] * 10
    >>> [len(orjson.loads(m.value)["events"]) for m in encode_events_messages(evs, 2,
    ...                                                                     max_bytes=500)]
    [2, 3, 2, 3]
    >>> big = {"auditID": "b", "requestObject": {"data": "x" * 1000}}
    >>> [orjson.loads(m.value)["events"][0]["requestObject"]
    ...  for m in encode_events_messages([big], 0, max_bytes=500)]
    [{'klaxon.cut': {'bytes': 1011, 'reason': 'event over 500 bytes'}}]
    """
    try:
        value = orjson.dumps({"v": EVENTS_MESSAGE_VERSION, "events": events})
    except orjson.JSONEncodeError:
        if len(events) == 1:
            return _encode_cut(events[0], partition, max_bytes, rejected, "not encodable")
        value = b""  # find the culprit by halving
    if value and len(value) <= max_bytes:
        return [Outgoing(event_key(events[0]), value, partition, events)]
    if len(events) == 1:
        why = f"event over {max_bytes} bytes"
        return _encode_cut(events[0], partition, max_bytes, rejected, why)
    half = len(events) // 2
    return encode_events_messages(
        events[:half], partition, max_bytes=max_bytes, rejected=rejected
    ) + encode_events_messages(events[half:], partition, max_bytes=max_bytes, rejected=rejected)


#: Fields that `cut_bodies` removes from an event too large or too deep to send.
BODY_FIELDS = ("requestObject", "responseObject")


def cut_bodies(event: dict[str, Any], reason: str) -> dict[str, Any]:
    """``event`` with its request and response bodies replaced by a marker naming their size,
    so rules still see who did what to which object (bodies are only a few percent of events).

    >>> cut_bodies({"verb": "create", "requestObject": {"a": 1}}, "too big")
    {'verb': 'create', 'requestObject': {'klaxon.cut': {'bytes': 7, 'reason': 'too big'}}}
    """
    out = dict(event)
    for name in BODY_FIELDS:
        if name in out:
            out[name] = {"klaxon.cut": {"bytes": _size(out[name]), "reason": reason}}
    return out


def _size(obj: Any) -> int:
    """Encoded size of ``obj`` (-1 when orjson refuses it, e.g. nested too deep)."""
    try:
        return len(orjson.dumps(obj))
    except orjson.JSONEncodeError:
        return -1


def _encode_cut(
    event: dict[str, Any],
    partition: int,
    max_bytes: int,
    rejected: list[tuple[str, dict[str, Any]]] | None,
    why: str,
) -> list[Outgoing]:
    cut = cut_bodies(event, why)
    try:
        value = orjson.dumps({"v": EVENTS_MESSAGE_VERSION, "events": [cut]})
    except orjson.JSONEncodeError as exc:
        reason = f"event cannot be encoded even without its bodies: {exc}"
    else:
        if len(value) <= max_bytes:
            return [Outgoing(event_key(cut), value, partition, [cut])]
        reason = (
            f"event of {len(value)} bytes exceeds the {max_bytes}-byte message limit even"
            " without its request and response bodies"
        )
    if rejected is None:
        raise ValueError(reason)
    rejected.append((reason, event))
    return []


def normalise_message(
    payload: bytes | None,
    source: Source,
    *,
    partitions: int,
    cluster: str,
    max_bytes: int = MAX_MESSAGE_BYTES,
    redaction: Redaction = NO_PATTERNS,
    times: StageTimes | None = None,
) -> NormaliseResult:
    """Decode one raw message and route its events; never raises on bad input.

    ``times``: where the decode, redact, route and encode stages' CPU time is added.

    >>> r = normalise_message(b" \\n", Source("raw", 0, 1), partitions=4, cluster="c")
    >>> (r.events_in, r.normalised, r.filtered, r.messages, r.dead_letters)
    (1, 0, {'empty-message': 1}, [], [])
    """
    result = NormaliseResult()
    if not payload or payload.isspace():  # a tombstone or blank message: counted, not lost
        result.events_in = 1
        result.filtered = {EMPTY_MESSAGE: 1}
        return result
    clock = times.clock if times is not None else _no_clock
    started = clock()
    try:
        decoded = decode_payload(payload, cluster=cluster, redaction=redaction)
    except Exception as exc:  # a normaliser bug must not stop the stream: keep the bytes
        result.events_in = 1
        result.dead_letters.append(
            dead_letter_bytes(f"normaliser error: {describe_error(exc)}", payload, source)
        )
        return result
    result.events_in = len(decoded.events) + len(decoded.rejected) + sum(decoded.filtered.values())
    result.normalised = len(decoded.events)
    result.filtered = dict(decoded.filtered)
    result.dead_letters = [
        dead_letter_bytes(r.reason, r.original, source) for r in decoded.rejected
    ]
    rejected: list[tuple[str, dict[str, Any]]] = []
    decoded_at = clock()
    groups = sorted(group_by_partition(decoded.events, partitions).items())
    routed_at = clock()
    for part, group in groups:
        result.messages.extend(
            encode_events_messages(group, part, max_bytes=max_bytes, rejected=rejected)
        )
    if times is not None:
        times.add("decode", decoded_at - started - decoded.redact_ns)
        times.add("redact", decoded.redact_ns)
        times.add("route", routed_at - decoded_at)
        times.add("encode", clock() - routed_at)
    for reason, event in rejected:
        result.normalised -= 1
        result.dead_letters.append(dead_letter_bytes(reason, _dump(event), source))
    return result


def _no_clock() -> int:
    return 0


def decode_events_message(value: bytes | None) -> list[Any] | str:
    """The events of an events-topic message, or the reason it is unusable (the items are
    whatever JSON the message holds: `detect_message` dead-letters those not objects; typed
    so, because compiled code checks a declared type at run time).

    >>> decode_events_message(b'{"v":1,"events":[{"auditID":"a"}]}')
    [{'auditID': 'a'}]
    >>> decode_events_message(b'{"v":2,"events":[]}')
    'malformed events message: unsupported version 2'
    """
    if not value:
        return "malformed events message: empty value"
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return f"malformed events message: not JSON ({exc})"
    if not isinstance(doc, dict):
        return f"malformed events message: JSON {type(doc).__name__}, not an object"
    if doc.get("v") != EVENTS_MESSAGE_VERSION:
        return f"malformed events message: unsupported version {doc.get('v')!r}"
    events = doc.get("events")
    if not isinstance(events, list):
        return "malformed events message: 'events' is not a list"
    return events


def detect_message(
    value: bytes | None,
    source: Source,
    engine: EngineLike,
    to_alert: Callable[[Any], dict[str, Any]],
    *,
    decoded: list[dict[str, Any]] | None = None,
    times: StageTimes | None = None,
) -> DetectResult:
    """Evaluate one events message; malformed messages and failing events become dead letters.

    The whole batch goes to ``engine.evaluate_batch``; only if that raises are the events
    retried one by one, so one poisonous event costs its own dead letter, not its batch's
    alerts. ``decoded``: the message's events, already parsed (`pipeline.handoff`).
    ``times``: where the parse, engine and alert-build stages' CPU time is added (an engine
    that knows its own stages, `pipeline.tables.BoundEngine`, moves its share out of
    ``engine``).
    """
    result = DetectResult()
    clock = times.clock if times is not None else _no_clock
    started = clock()
    events: list[Any] | str = decode_events_message(value) if decoded is None else decoded
    if isinstance(events, str):
        result.errors = 1
        result.dead_letters.append(dead_letter_bytes(events, value or b"", source))
        return result
    good: list[dict[str, Any]] = []
    for item in events:
        if isinstance(item, dict):
            good.append(item)
        else:
            result.errors += 1
            reason = f"malformed events message: item is JSON {type(item).__name__}"
            result.dead_letters.append(dead_letter_bytes(reason, orjson.dumps(item), source))
    result.events = len(good)
    stamps = [t for e in good if (t := e.get("stageTimestamp")).__class__ is str]
    result.latest = max(stamps) if stamps else None  # same format (Z, microseconds): sortable
    parsed_at = clock()
    try:
        matches = list(engine.evaluate_batch(good))
    except Exception:
        matches = []
        for event in good:
            try:
                matches.extend(engine.evaluate_batch([event]))
            except Exception as exc:
                result.errors += 1
                reason = f"detection error: {describe_error(exc)}"
                result.dead_letters.append(dead_letter_bytes(reason, _dump(event), source))
    evaluated_at = clock()
    for match in matches:
        try:
            alert = to_alert(match)
            result.alerts.append(
                Outgoing(str(alert["id"]).encode(), orjson.dumps(alert), doc=alert)
            )
        except Exception as exc:
            result.errors += 1
            matched = getattr(match, "event", None)
            reason = f"alert error: {describe_error(exc)}"
            result.dead_letters.append(dead_letter_bytes(reason, _dump(matched), source))
    if times is not None:
        times.add("parse", parsed_at - started)
        times.add("engine", evaluated_at - parsed_at)
        times.add("alert_build", clock() - evaluated_at)
    return result


def _dump(obj: Any) -> bytes:
    """Best-effort JSON of an event for a dead letter (never raises)."""
    try:
        return orjson.dumps(obj, default=str)
    except TypeError:
        return repr(obj).encode()
