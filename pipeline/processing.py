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
from schemas.deadletter import dead_letter
from schemas.normalize import decode_payload

__all__ = [
    "EVENTS_MESSAGE_VERSION",
    "MAX_DEADLETTER_ORIGINAL",
    "MAX_MESSAGE_BYTES",
    "DetectResult",
    "EngineLike",
    "NormaliseResult",
    "Outgoing",
    "Source",
    "decode_events_message",
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


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message was read from (for dead letters and lag)."""

    topic: str
    partition: int | None
    offset: int | None


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to produce: optional explicit partition, key and value bytes.

    Events messages also carry the events they encode (not sent: `pipeline.handoff`).
    """

    key: bytes | None
    value: bytes
    partition: int | None = None
    events: list[dict[str, Any]] | None = field(default=None, compare=False, repr=False)


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


def _letter(reason: str, original: bytes, source: Source) -> bytes:
    """An encoded dead letter; huge originals are truncated so the letter stays sendable."""
    if len(original) > MAX_DEADLETTER_ORIGINAL:
        reason = f"{reason} (original truncated from {len(original)} bytes)"
        original = original[:MAX_DEADLETTER_ORIGINAL]
    letter = dead_letter(
        reason, original, topic=source.topic, partition=source.partition, offset=source.offset
    )
    return orjson.dumps(letter)


def _describe(exc: BaseException) -> str:
    """``Type: message`` plus the innermost frame, short enough for a dead-letter reason."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}"[:300] + where


def encode_events_messages(
    events: list[dict[str, Any]], partition: int, *, max_bytes: int = MAX_MESSAGE_BYTES
) -> list[Outgoing]:
    """``{"v":1,"events":[...]}`` messages for one partition, halved until under ``max_bytes``.

    The key is the first event's routing key (informative: the partition is explicit). A
    single event larger than ``max_bytes`` still gets its own message.

    >>> evs = [{"cluster": "c", "user": {"username": "u"}, "pad": "x" * 100}] * 10
    >>> [len(orjson.loads(m.value)["events"]) for m in encode_events_messages(evs, 2,
    ...                                                                     max_bytes=500)]
    [2, 3, 2, 3]
    """
    value = orjson.dumps({"v": EVENTS_MESSAGE_VERSION, "events": events})
    if len(value) <= max_bytes or len(events) == 1:
        return [Outgoing(event_key(events[0]), value, partition, events)]
    half = len(events) // 2
    return encode_events_messages(
        events[:half], partition, max_bytes=max_bytes
    ) + encode_events_messages(events[half:], partition, max_bytes=max_bytes)


def normalise_message(
    payload: bytes | None,
    source: Source,
    *,
    partitions: int,
    cluster: str,
    max_bytes: int = MAX_MESSAGE_BYTES,
) -> NormaliseResult:
    """Decode one raw message and route its events; never raises on bad input.

    >>> r = normalise_message(b"", Source("raw", 0, 1), partitions=4, cluster="c")
    >>> (r.events_in, r.normalised, r.messages, r.dead_letters)
    (0, 0, [], [])
    """
    result = NormaliseResult()
    if not payload:
        return result  # a tombstone or empty message carries no items
    try:
        decoded = decode_payload(payload, cluster=cluster)
    except Exception as exc:  # a normaliser bug must not stop the stream: keep the bytes
        result.events_in = 1
        result.dead_letters.append(_letter(f"normaliser error: {_describe(exc)}", payload, source))
        return result
    result.events_in = len(decoded.events) + len(decoded.rejected) + sum(decoded.filtered.values())
    result.normalised = len(decoded.events)
    result.filtered = dict(decoded.filtered)
    result.dead_letters = [_letter(r.reason, r.original, source) for r in decoded.rejected]
    for part, group in sorted(group_by_partition(decoded.events, partitions).items()):
        result.messages.extend(encode_events_messages(group, part, max_bytes=max_bytes))
    return result


def decode_events_message(value: bytes | None) -> list[dict[str, Any]] | str:
    """The events of an events-topic message, or the reason it is unusable.

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
) -> DetectResult:
    """Evaluate one events message; malformed messages and failing events become dead letters.

    The whole batch goes to ``engine.evaluate_batch``; only if that raises are the events
    retried one by one, so one poisonous event costs its own dead letter, not its batch's
    alerts. ``decoded``: the message's events, already parsed (`pipeline.handoff`).
    """
    result = DetectResult()
    events = decode_events_message(value) if decoded is None else decoded
    if isinstance(events, str):
        result.errors = 1
        result.dead_letters.append(_letter(events, value or b"", source))
        return result
    good: list[dict[str, Any]] = []
    for item in events:
        if isinstance(item, dict):
            good.append(item)
        else:
            result.errors += 1
            reason = f"malformed events message: item is JSON {type(item).__name__}"
            result.dead_letters.append(_letter(reason, orjson.dumps(item), source))
    result.events = len(good)
    try:
        matches = list(engine.evaluate_batch(good))
    except Exception:
        matches = []
        for event in good:
            try:
                matches.extend(engine.evaluate_batch([event]))
            except Exception as exc:
                result.errors += 1
                reason = f"detection error: {_describe(exc)}"
                result.dead_letters.append(_letter(reason, _dump(event), source))
    for match in matches:
        try:
            alert = to_alert(match)
            result.alerts.append(Outgoing(str(alert["id"]).encode(), orjson.dumps(alert)))
        except Exception as exc:
            result.errors += 1
            matched = getattr(match, "event", None)
            reason = f"alert error: {_describe(exc)}"
            result.dead_letters.append(_letter(reason, _dump(matched), source))
    return result


def _dump(obj: Any) -> bytes:
    """Best-effort JSON of an event for a dead letter (never raises)."""
    try:
        return orjson.dumps(obj, default=str)
    except TypeError:
        return repr(obj).encode()
