"""In-process handoff of parsed events from the normalise agent to the detect agent (pure).

Every event crosses the events topic: the normalise agent encodes a batch with orjson, the
detect agent reads the message back and parses it again (~7 µs per event, a quarter of the
engine's cost). When both agents run in the same worker, which is the usual case, the parsed
batch still exists in memory. `Handoff` keeps it with the exact message bytes, so the
detect agent can take it instead of parsing: a hit requires the consumed value to be
byte-for-byte the value that was produced, so the events are the ones ``orjson.loads`` would
give (canonical events are JSON-native dicts, see ``docs/architecture.md``). Batches are
found by the value's length, head and tail (`fingerprint`) and the whole value is compared
on a hit: hashing whole values (~1 KB per event, the produced one and the consumed copy)
cost ~0.4 µs per event, a memory compare costs a tenth of that.

The normalise agent also evaluates the stateless rules on those batches right after decoding
them, while their dicts are still in the CPU's caches, and files the matches with them: by
the time the detect agent reaches a batch, its events have left the caches, and evaluating
them there cost twice as much (4.2-4.5 µs/event against 2.0 for the same batch evaluated
again at once, measured in the worker with `bench pipeline`; the stateful detectors now pay
part of those misses, and the two stages together cost about 1 µs/event less).
`Evaluated` hands those matches to the detect agent's engine chain in place of evaluating
again. A rule reload therefore applies to the events decoded after it.

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
from collections.abc import Sequence
from typing import Any, NamedTuple

from pipeline.processing import EngineLike

__all__ = ["Evaluated", "HandedOff", "Handoff", "fingerprint"]

#: Bytes of a value's head and of its tail in its `fingerprint` (the head holds the first
#: event's ``auditID``, the tail the last event's end).
EDGE = 160


def fingerprint(value: bytes) -> tuple[int, bytes, bytes]:
    """What a batch is filed under: the value's length, head and tail (cheap to hash; two
    values that share it are still told apart by comparing them whole).

    >>> fingerprint(b'{"v":1,"events":[]}')
    (19, b'{"v":1,"events":[]}', b'{"v":1,"events":[]}')
    """
    return (len(value), value[:EDGE], value[-EDGE:])


class HandedOff(NamedTuple):
    """A batch as the normalise agent left it: its events and, if it evaluated them, the
    engine's matches of them."""

    events: list[dict[str, Any]]
    matches: list[Any] | None


class Evaluated:
    """``engine`` for one events message whose matches are known: asked for exactly those
    events, it returns them; asked for anything else (the detect agent's one-by-one retry
    after a failure), it evaluates.

    >>> class Engine:
    ...     def evaluate_batch(self, events): return [f"evaluated {e['a']}" for e in events]
    >>> batch = [{"a": 1}, {"a": 2}]
    >>> e = Evaluated(Engine(), batch, ["known 1"])
    >>> e.evaluate_batch(list(batch)), e.evaluate_batch(batch[:1])
    (['known 1'], ['evaluated 1'])
    """

    def __init__(
        self, engine: EngineLike, events: list[dict[str, Any]], matches: list[Any]
    ) -> None:
        self.engine = engine
        self.events = events
        self.matches = matches

    def evaluate_batch(self, events: list[dict[str, Any]]) -> Sequence[Any]:
        """The known matches for the same events (the same dicts: a pointer compare each),
        else the engine's."""
        if events == self.events:
            return list(self.matches)
        return self.engine.evaluate_batch(events)


class Handoff:
    """Parsed event batches by their encoded events-topic message, at most ``max_events``."""

    def __init__(self, max_events: int = 20_000) -> None:
        self.max_events = max_events
        #: (value, its batch) by `fingerprint`, oldest first.
        self._batches: OrderedDict[tuple[int, bytes, bytes], tuple[bytes, HandedOff]]
        self._batches = OrderedDict()
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

    def put(
        self, value: bytes, events: list[dict[str, Any]], matches: list[Any] | None = None
    ) -> None:
        """Remember that ``value`` encodes ``events`` (and the engine's ``matches`` of them);
        drop the oldest batches over the bound.

        Batches larger than the bound are not kept at all.

        >>> h = Handoff(max_events=2)
        >>> h.put(b"1", [{}]); h.put(b"2", [{}]); h.put(b"3", [{}])
        >>> (h.take(b"1"), h.take(b"3"), h.dropped)
        (None, [{}], 1)
        """
        size = len(events)
        if size > self.max_events:
            return
        key = fingerprint(value)
        old = self._batches.pop(key, None)  # the same value again, or one sharing its print
        if old is not None:
            self._events -= len(old[1].events)
        self._batches[key] = (value, HandedOff(events, matches))
        self._events += size
        while self._events > self.max_events:
            _, (_, evicted) = self._batches.popitem(last=False)
            self._events -= len(evicted.events)
            self.dropped += 1

    def take(self, value: bytes | None) -> list[dict[str, Any]] | None:
        """The events encoded by ``value`` if this process produced it (and forget them)."""
        batch = self.take_batch(value)
        return None if batch is None else batch.events

    def take_batch(self, value: bytes | None) -> HandedOff | None:
        """`take`, with the matches filed beside the events.

        >>> h = Handoff()
        >>> h.put(b"v", [{"a": 1}], ["m"])
        >>> h.take_batch(b"v")
        HandedOff(events=[{'a': 1}], matches=['m'])
        """
        if not value:
            self.misses += 1
            return None
        key = fingerprint(value)
        held = self._batches.get(key)
        if held is None or held[0] != value:  # never put, or another value with its print
            self.misses += 1
            return None
        del self._batches[key]
        batch = held[1]
        self._events -= len(batch.events)
        self.hits += 1
        return batch
