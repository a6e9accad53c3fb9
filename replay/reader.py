"""Read audit log files as a stream of single events (raw bytes), and group them into batches.

`iter_events` accepts JSON lines (the API server's log backend), a JSON array, a single JSON
object (an `EventList` is expanded to its items) and the same gzip-compressed (by content,
whatever the file name). JSON lines are passed through byte for byte, unparsed, so a
malformed line reaches the raw topic as it is and is dead-lettered by the worker: replay is
faithful, not a validator. `iter_batches` groups events into raw-topic payloads (JSON lines)
of at most N events and a byte budget, optionally paced by a schedule.

>>> import tempfile, os
>>> path = Path(tempfile.mkdtemp()) / "a.json"
>>> _ = path.write_bytes(b'{"kind":"EventList","items":[{"auditID":"1"},{"auditID":"2"}]}')
>>> list(iter_events(path))
[b'{"auditID":"1"}', b'{"auditID":"2"}']
>>> [b.payload for b in iter_batches([b"a", b"b", b"c"], max_events=2)]
[b'a\\nb', b'c']
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import orjson

from replay.errors import ReplayInputError

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "Batch",
    "event_time",
    "iter_batches",
    "iter_events",
]

#: Raw messages stay under this many bytes (Kafka's default message limit is 1 MB).
MAX_PAYLOAD_BYTES = 900_000
_GZIP_MAGIC = b"\x1f\x8b"


def _open(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped if its content is gzip."""
    try:
        fh: IO[bytes] = open(path, "rb")  # noqa: SIM115 - returned to the caller's `with`
    except OSError as exc:
        raise ReplayInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if fh.read(2) == _GZIP_MAGIC:
        fh.seek(0)
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    fh.seek(0)
    return fh


def _items(doc: object, path: Path) -> Iterator[bytes]:
    if isinstance(doc, list):
        for item in doc:
            yield orjson.dumps(item)
    elif isinstance(doc, dict) and doc.get("kind") == "EventList":
        items = doc.get("items")
        if not isinstance(items, list):
            raise ReplayInputError(f"{path}: EventList without an items list")
        for item in items:
            yield orjson.dumps(item)
    elif isinstance(doc, dict):
        yield orjson.dumps(doc)  # one event, or an envelope the normaliser understands
    else:
        raise ReplayInputError(f"{path}: top-level JSON {type(doc).__name__}, not events")


def iter_events(
    path: str | Path, *, on_position: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """Yield each event of ``path`` as JSON bytes (see the module docstring for formats).

    ``on_position(offset)``, if given, is told how many bytes of the file (as stored:
    compressed for gzip) have been read, before each event is yielded (for progress bars).
    Raises `ReplayInputError` if the file cannot be read, or is neither JSON lines nor one
    JSON document.
    """
    path = Path(path)
    try:
        with _open(path) as fh:
            raw = getattr(fh, "fileobj", None) or fh  # the stored bytes under a GzipFile
            where = raw.tell if on_position is not None else None
            first = b""
            for line in fh:
                first = line.strip()
                if first:
                    break
            if not first:
                return
            try:
                doc = orjson.loads(first)
                lines_mode = isinstance(doc, dict) and doc.get("kind") != "EventList"
            except orjson.JSONDecodeError:
                lines_mode = False
            if lines_mode:
                if where is not None and on_position is not None:
                    on_position(where())
                yield first
                for line in fh:
                    line = line.strip()
                    if line:
                        if where is not None and on_position is not None:
                            on_position(where())
                        yield line
                return
            rest = fh.read()
            if where is not None and on_position is not None:
                on_position(where())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ReplayInputError(f"cannot read {path}: {exc}") from exc
    try:
        whole = orjson.loads(first + b"\n" + rest)
    except orjson.JSONDecodeError as exc:
        raise ReplayInputError(f"{path}: neither JSON lines nor a JSON document ({exc})") from exc
    yield from _items(whole, path)


def event_time(event: bytes) -> float | None:
    """The event's time (``stageTimestamp``, else ``requestReceivedTimestamp``) in epoch
    seconds, or None when absent or unparsable (used to pace replays by event time).

    >>> event_time(b'{"stageTimestamp":"2024-01-01T00:00:01.500000Z"}') - event_time(
    ...     b'{"requestReceivedTimestamp":"2024-01-01T00:00:00Z"}')
    1.5
    >>> event_time(b'not json') is None
    True
    """
    try:
        doc = orjson.loads(event)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    for key in ("stageTimestamp", "requestReceivedTimestamp"):
        value = doc.get(key)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


@dataclass(frozen=True, slots=True)
class Batch:
    """One raw-topic payload: events joined as JSON lines, and when to send it (seconds from
    the start of the replay; None: as fast as possible)."""

    payload: bytes
    events: int
    due: float | None = None


def iter_batches(
    events: Iterable[bytes],
    *,
    max_events: int = 200,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    schedule: Callable[[int, bytes], float] | None = None,
    window: float = 0.1,
) -> Iterator[Batch]:
    """Group events into JSON lines payloads of at most ``max_events`` and ``max_bytes``.

    With ``schedule(index, event) -> seconds``, a batch also ends before an event due more
    than ``window`` seconds after the batch's first event, and carries that first due time.
    An event larger than ``max_bytes`` travels alone.

    >>> [(b.events, b.due) for b in iter_batches([b"a"] * 5, schedule=lambda i, e: i * 0.06)]
    [(2, 0.0), (2, 0.12), (1, 0.24)]
    """
    if max_events < 1:
        raise ValueError("max_events must be at least 1")
    buf = io.BytesIO()
    count = 0
    first_due: float | None = None
    for index, event in enumerate(events):
        due = schedule(index, event) if schedule is not None else None
        full = count >= max_events or (count and buf.tell() + 1 + len(event) > max_bytes)
        late = due is not None and first_due is not None and due > first_due + window
        if count and (full or late):
            yield Batch(buf.getvalue(), count, first_due)
            buf = io.BytesIO()
            count = 0
        if count:
            buf.write(b"\n")
        else:
            first_due = due
        buf.write(event)
        count += 1
    if count:
        yield Batch(buf.getvalue(), count, first_due)
