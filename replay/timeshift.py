"""Shift the timestamps of raw audit events by one constant (``klaxon replay --rewrite-time``).

A replayed file keeps its spacing but moves in time, so the first event lands at a chosen
instant (usually now): correlation windows, anomaly windows and the learning periods of new
terms behave as they did, and alerts carry recent times. Pure: raw JSON lines in, raw JSON
lines out.

Shifted: ``requestReceivedTimestamp`` and ``stageTimestamp`` of audit events (also inside an
``EventList``), and what cloud envelopes carry: AKS records (``time``, and the event in
``properties.log``, a JSON string or an object), EKS CloudWatch payloads (``logEvents[]
.timestamp`` in milliseconds, and the event in ``message``), GKE log entries (``timestamp``,
``receiveTimestamp``). Nothing inside request or response bodies is touched. A line that is
not JSON, or has no timestamp, passes byte for byte (replay stays faithful); timestamps keep
their precision and zone suffix.

>>> shift = TimeShifter(start=parse_time("2030-01-01T00:00:00Z"))
>>> shift(b'{"auditID":"a","stageTimestamp":"2024-05-01T10:00:00.000001Z",'
...       b'"requestReceivedTimestamp":"2024-05-01T09:59:59.500000Z"}')
b'{"auditID":"a","stageTimestamp":"2030-01-01T00:00:00.500001Z","requestReceivedTimestamp":"2030-01-01T00:00:00.000000Z"}'
>>> shift(b'{"auditID":"b","stageTimestamp":"2024-05-01T11:00:00Z"}')
b'{"auditID":"b","stageTimestamp":"2030-01-01T01:00:00.5Z"}'
>>> shift(b'not json')
b'not json'
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

__all__ = ["TimeShifter", "parse_time", "shift_document", "shift_timestamp", "timestamps"]

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|z|[+-]\d\d:?\d\d)?\Z")
_EVENT_KEYS = ("requestReceivedTimestamp", "stageTimestamp")
_GKE_KEYS = ("timestamp", "receiveTimestamp")


def _parse(value: str) -> tuple[datetime, str, str] | None:
    """(aware datetime to the microsecond, the fraction's digits, zone suffix) or None."""
    m = _RFC3339.match(value)
    if m is None:
        return None
    base, fraction, zone = m.group(1), m.group(2) or "", m.group(3) or ""
    try:
        dt = datetime.fromisoformat(base.replace(" ", "T"))
        if zone and zone not in "Zz":
            dt = dt.replace(tzinfo=datetime.strptime(zone.replace(":", ""), "%z").tzinfo)
        else:
            dt = dt.replace(tzinfo=UTC)
    except ValueError:
        return None
    micros = int((fraction + "000000")[:6]) if fraction else 0
    return dt.replace(microsecond=micros), fraction, zone


def parse_time(value: str) -> float:
    """Epoch seconds of an RFC 3339 timestamp (``2024-05-01T10:00:00Z``; no zone means UTC).

    >>> parse_time("1970-01-01T00:01:00.5Z"), parse_time("1970-01-01T01:00:00+01:00")
    (60.5, 0.0)
    >>> parse_time("yesterday")
    Traceback (most recent call last):
    ...
    ValueError: not an RFC 3339 timestamp: 'yesterday'
    """
    parsed = _parse(value.strip())
    if parsed is None:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    return parsed[0].timestamp()


def shift_timestamp(value: str, delta_us: int) -> str:
    """``value`` moved by ``delta_us`` microseconds, in its own precision and zone (digits
        beyond microseconds are kept as they are, more digits are added when the shift needs
    them); unparsable values are returned unchanged.

        >>> shift_timestamp("2024-02-28T23:59:59Z", 1_000_000)
        '2024-02-29T00:00:00Z'
        >>> shift_timestamp("2024-01-01T00:00:00.123456789Z", -1)
        '2024-01-01T00:00:00.123455789Z'
        >>> shift_timestamp("2024-01-01T01:00:00.5+01:00", 250_000)
        '2024-01-01T01:00:00.75+01:00'
    """
    parsed = _parse(value)
    if parsed is None:
        return value
    dt, fraction, zone = parsed
    out = dt + timedelta(microseconds=delta_us)
    text = out.strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{out.microsecond:06d}" + fraction[6:]
    keep = max(len(fraction), len(digits[:6].rstrip("0")))  # never lose the shift's digits
    if keep:
        text += "." + digits[:keep]
    return text + zone


class _Walker:
    """Applies ``on_text`` to each timestamp string and ``on_ms`` to each epoch-millisecond
    number of one document, at the known places only (see the module docstring)."""

    def __init__(self, on_text: Callable[[str], str], on_ms: Callable[[int], int]) -> None:
        self.on_text = on_text
        self.on_ms = on_ms

    def keys(self, doc: dict[str, Any], names: tuple[str, ...]) -> None:
        for name in names:
            value = doc.get(name)
            if isinstance(value, str):
                doc[name] = self.on_text(value)

    def embedded(self, value: Any) -> Any:
        """An event carried as a JSON string (AKS ``properties.log``, EKS ``message``) or
        an object; a string that is not a JSON object is left alone."""
        if isinstance(value, dict):
            self.keys(value, _EVENT_KEYS)
            return value
        if isinstance(value, str):
            try:
                inner = orjson.loads(value)
            except orjson.JSONDecodeError:
                return value
            if isinstance(inner, dict):
                self.keys(inner, _EVENT_KEYS)
                return orjson.dumps(inner).decode()
        return value

    def aks_record(self, rec: dict[str, Any]) -> None:
        self.keys(rec, ("time",))
        props = rec.get("properties")
        if isinstance(props, dict) and "log" in props:
            props["log"] = self.embedded(props["log"])

    def document(self, doc: Any) -> None:
        if isinstance(doc, list):
            for item in doc:
                self.document(item)
            return
        if not isinstance(doc, dict):
            return
        if isinstance(doc.get("items"), list) and doc.get("kind") == "EventList":
            self.document(doc["items"])
        elif isinstance(doc.get("records"), list):
            for rec in doc["records"]:
                if isinstance(rec, dict):
                    self.aks_record(rec)
        elif isinstance(doc.get("logEvents"), list):
            for log_event in doc["logEvents"]:
                if isinstance(log_event, dict):
                    if isinstance(log_event.get("timestamp"), int):
                        log_event["timestamp"] = self.on_ms(log_event["timestamp"])
                    if "message" in log_event:
                        log_event["message"] = self.embedded(log_event["message"])
        elif "protoPayload" in doc:
            self.keys(doc, _GKE_KEYS)
        elif isinstance(doc.get("properties"), dict) and ("category" in doc or "resourceId" in doc):
            self.aks_record(doc)
        else:
            self.keys(doc, _EVENT_KEYS)


def timestamps(doc: Any) -> list[float]:
    """Every timestamp `shift_document` would move, in epoch seconds.

    >>> log = '{"stageTimestamp":"1970-01-01T00:00:01Z"}'
    >>> timestamps({"records": [{"time": "1970-01-01T00:00:02Z", "properties": {"log": log}}]})
    [2.0, 1.0]
    """
    found: list[float] = []

    def text(value: str) -> str:
        parsed = _parse(value)
        if parsed is not None:
            found.append(parsed[0].timestamp())
        return value

    def ms(value: int) -> int:
        found.append(value / 1000)
        return value

    _Walker(text, ms).document(doc)
    return found


def shift_document(doc: Any, delta_us: int) -> int:
    """Move every timestamp of a parsed raw document by ``delta_us`` microseconds, in place;
    returns how many were moved.

    >>> d = {"logEvents": [{"timestamp": 1000,
    ...                     "message": '{"stageTimestamp":"1970-01-01T00:00:01Z"}'}]}
    >>> shift_document(d, 2_000_000), d["logEvents"]
    (2, [{'timestamp': 3000, 'message': '{"stageTimestamp":"1970-01-01T00:00:03Z"}'}])
    """
    moved = 0

    def text(value: str) -> str:
        nonlocal moved
        shifted = shift_timestamp(value, delta_us)
        moved += shifted != value
        return shifted

    def ms(value: int) -> int:
        nonlocal moved
        moved += 1
        return value + delta_us // 1000

    _Walker(text, ms).document(doc)
    return moved


class TimeShifter:
    """``shifter(line) -> line``: moves every event by the one constant that puts the first
    timestamped event's earliest timestamp at ``start`` (epoch seconds; None: the wall
    clock when that event is seen). The constant is a whole number of microseconds, so
    spacing is kept exactly."""

    def __init__(self, start: float | None = None, *, clock: Callable[[], float] = time.time):
        self.start = start
        self.clock = clock
        #: The shift in microseconds, once the first timestamped event fixed it.
        self.delta_us: int | None = None

    def __call__(self, line: bytes) -> bytes:
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError:
            return line
        if self.delta_us is None:
            found = timestamps(doc)
            if not found:
                return line
            start = self.clock() if self.start is None else self.start
            self.delta_us = round((start - min(found)) * 1_000_000)
        if not shift_document(doc, self.delta_us):
            return line  # nothing to move (or a zero shift): the line as it was
        return orjson.dumps(doc)
