"""In-process handoff of parsed events from the normalise agent to the detect agent (pure).

Every event crosses the events topic: the normalise agent encodes a batch with orjson, the
detect agent reads the message back and parses it again (~7 µs per event, a quarter of the
engine's cost). When both agents run in the same worker, which is the usual case, the parsed
batch still exists in memory. `Handoff` keeps it, keyed by the exact message bytes, so the
detect agent can take it instead of parsing: a hit requires the consumed value to be
byte-for-byte the value that was produced, so the events are the ones ``orjson.loads`` would
give (canonical events are JSON-native dicts, see ``docs/architecture.md``).

The topic stays the source of truth: the detect agent still consumes, acknowledges and
commits every events message, a message written by another worker (or a miss for any
reason) is simply parsed, and the cache is bounded by a number of events (oldest dropped
first), so a detect agent that lags or partitions that moved to another worker cost
memory only up to the bound.

>>> h = Handoff(max_events=3)
>>> h.put(b'{"v":1,"events":[{"a":1}]}', [{"a": 1}])
>>> h.take(b'{"v":1,"events":[{"a":1}]}'), h.take(b'{"v":1,"events":[{"a":1}]}')
([{'a': 1}], None)
>>> (h.hits, h.misses, len(h))
(1, 1, 0)
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["Handoff"]


class Handoff:
    """Parsed event batches by their encoded events-topic message, at most ``max_events``."""

    def __init__(self, max_events: int = 20_000) -> None:
        self.max_events = max_events
        self._batches: OrderedDict[bytes, list[dict[str, Any]]] = OrderedDict()
        self._events = 0
        self.hits = 0
        self.misses = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def events(self) -> int:
        """Events currently held."""
        return self._events

    def put(self, value: bytes, events: list[dict[str, Any]]) -> None:
        """Remember that ``value`` encodes ``events``; drop the oldest batches over the bound.

        Batches larger than the bound are not kept at all.

        >>> h = Handoff(max_events=2)
        >>> h.put(b"1", [{}]); h.put(b"2", [{}]); h.put(b"3", [{}])
        >>> (h.take(b"1"), h.take(b"3"), h.dropped)
        (None, [{}], 1)
        """
        size = len(events)
        if size > self.max_events:
            return
        old = self._batches.pop(value, None)
        if old is not None:
            self._events -= len(old)
        self._batches[value] = events
        self._events += size
        while self._events > self.max_events:
            _, evicted = self._batches.popitem(last=False)
            self._events -= len(evicted)
            self.dropped += 1

    def take(self, value: bytes | None) -> list[dict[str, Any]] | None:
        """The events encoded by ``value`` if this process produced it (and forget them)."""
        events = self._batches.pop(value, None) if value else None
        if events is None:
            self.misses += 1
            return None
        self._events -= len(events)
        self.hits += 1
        return events
