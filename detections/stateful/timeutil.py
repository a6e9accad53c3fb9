"""Event time: every stateful detector runs on the time the API server received the request.

Using the event's own clock (not the worker's) makes replay at any speed produce the same
windows, new terms decisions and alerts as live processing.

>>> event_time({"requestReceivedTimestamp": "2026-11-27T09:15:02.104526Z"})
1795770902.104526
>>> event_time({"stageTimestamp": "2026-11-27T09:15:02.123456789Z"})  # nanoseconds: truncated
1795770902.123456
>>> event_time({}) is None
True
>>> iso(1795770902.5)
'2026-11-27T09:15:02.500000Z'
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

_UTC = dt.UTC
_fromisoformat = dt.datetime.fromisoformat  # reads "Z" as UTC (Python 3.11+)


#: Epoch seconds of ``YYYY-MM-DDTHH:MM:SS`` prefixes already seen (bounded; cleared when
#: full): the events of one second share their prefix, so a timestamp is one lookup plus
#: its microseconds.
_SECONDS: dict[str, int] = {}
_SECONDS_MAX = 4096


def parse_time(text: str) -> float | None:
    """Seconds since the epoch for an RFC 3339 timestamp, or None when it cannot be parsed.

    The API server's own form (``2026-11-27T09:15:02.104526Z``, microseconds, UTC) is its
    second (`_SECONDS`) plus its microseconds, the same float ``fromisoformat`` gives (both
    divide the whole microseconds by a million once); other forms take the general path.

    >>> parse_time("2026-11-27T09:15:02.104526Z"), parse_time("2026-11-27T09:15:02+00:00")
    (1795770902.104526, 1795770902.0)
    >>> parse_time("2026-11-27T09:15:02.1_4526Z"), parse_time("2026-13-27T09:15:02.104526Z")
    (None, None)
    """
    if len(text) == 27 and text[26] == "Z" and text[19] == ".":
        micros = text[20:26]
        if micros.isascii() and micros.isdigit():
            head = text[:19]
            seconds = _SECONDS.get(head)
            if seconds is None:
                seconds = _whole_seconds(head)
            if seconds is not None:
                return (seconds * 1_000_000 + int(micros)) / 1_000_000
    return _parse_general(text)


def _whole_seconds(head: str) -> int | None:
    """Epoch seconds of a ``YYYY-MM-DDTHH:MM:SS`` (UTC) prefix, remembered in `_SECONDS`."""
    try:
        value = _fromisoformat(head)
    except ValueError:
        return None
    if value.tzinfo is not None:  # an offset where the seconds belong: not this form
        return None
    seconds = int(value.replace(tzinfo=_UTC).timestamp())
    if len(_SECONDS) >= _SECONDS_MAX:
        _SECONDS.clear()
    _SECONDS[head] = seconds
    return seconds


@functools.lru_cache(maxsize=1024)
def _parse_general(text: str) -> float | None:
    """`parse_time` of any other form (cached: the detectors of one event all ask)."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    dot = s.find(".")
    if dot != -1:  # Python accepts at most 6 fractional digits
        end = dot + 1
        while end < len(s) and s[end].isdigit():
            end += 1
        if end - dot > 7:
            s = s[: dot + 7] + s[end:]
    try:
        value = dt.datetime.fromisoformat(s)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    return value.timestamp()


def event_time(event: dict[str, Any]) -> float | None:
    """When the request reached the API server (``requestReceivedTimestamp``), else stage time.

    ``requestReceivedTimestamp`` orders requests as they happened; a long watch's
    ``stageTimestamp`` can be minutes later than the request itself.
    """
    value = event.get("requestReceivedTimestamp")  # unrolled: called for every event
    if isinstance(value, str):
        parsed = parse_time(value)
        if parsed is not None:
            return parsed
    value = event.get("stageTimestamp")
    return parse_time(value) if isinstance(value, str) else None


def iso(seconds: float) -> str:
    """RFC 3339 UTC text with microseconds for epoch seconds."""
    return dt.datetime.fromtimestamp(seconds, _UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hour_of_day(seconds: float) -> int:
    """UTC hour (0-23) of an epoch time.

    >>> hour_of_day(1795770902.0)
    9
    """
    return int(seconds // 3600) % 24
