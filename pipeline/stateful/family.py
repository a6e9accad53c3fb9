"""What a stateful family is to the pipeline: `Family`, the base class every family module
implements, and the small toolkit it gets (`FamilyContext`, `Tick`, `TrackedStore`).

A family adapts one pure detector of `detections.stateful` (its steps decide; they know
nothing of partitions, changelogs or by-group messages) to the processor
(`pipeline.stateful.processor.StatefulProcessor`), which owns the partitions, the meta key,
the watermarks and the changelog encoding, and calls every registered family
(`pipeline.stateful.registry.FAMILIES`) through the hooks below. A family keeps one state
object per events partition (``S``: whatever it needs, usually a dataclass around the pure
engine and a `TrackedStore`) and declares, once:

- `name` (its key in `PartitionState.states`, its `StatefulOptions` switch) and `setting`
  (its ``KLAXON_STATEFUL_DETECTORS`` value);
- `kinds`: the changelog kind letters it owns (keys ``<partition>|<kind>|<key>``);
- `rekey_field`: its field in by-group messages, if it sends re-keyed observations.

Hooks, all optional except the state ones (the processor only calls the overridden ones, and
only for enabled families, except `dump`/`load`, which run for every registered family so a
switched-off family's state is kept or deleted as its `rebuild` decides):

======================  ====================================================================
`set_rules`              compile a (reloaded) rule set; `rule_ids`: base rules whose matches
                         `on_match` gets; `rules_held_back` / `rules_published`: suppression
`new_state` `rebuild`    an empty state; the state kept over a rule reload
`on_events`              every events message (its event times, the newest per cluster)
`on_match`               one stateless match of one of its `rule_ids`
`take_rekeyed`           by-group payloads per destination partition; `on_rekeyed` gets one
`on_tick`                the watermark timer (`Tick`)
`dump` `load` `loaded`   changelog pairs of what changed; one stored pair; after the last one
======================  ====================================================================

Hooks append alerts to the ``alerts`` list they are given, and never raise on input: they
report failures with ``ctx.error(what, exc)`` (counted, logged once per ``what``).
"""

from __future__ import annotations

from collections.abc import (
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from detections.engine import Match
from detections.rule import RuleSet
from pipeline.routing import partition_for

if TYPE_CHECKING:
    from pipeline.stateful.options import StatefulOptions

__all__ = ["Alerts", "Dumped", "Family", "FamilyContext", "Tick", "TrackedStore"]

S = TypeVar("S")
#: The list a hook appends its alerts to (`detections.alert.to_alert` shape).
Alerts = list[dict[str, Any]]
#: What `Family.dump` yields: ``(kind, key, JSON-able value or None for a deletion)``.
Dumped = tuple[str, str, Any]
_MISSING: Any = object()


@dataclass(frozen=True)
class FamilyContext:
    """What the processor gives every family."""

    options: StatefulOptions
    #: Partitions of the events (and by-group) topic.
    partitions: int
    #: ``error(what, exc)``: count a detector failure, log it once per ``what``.
    error: Callable[[str, BaseException], None]

    def owner(self, key: str) -> int:
        """The by-group partition that owns ``key`` (Kafka's default partitioner)."""
        return partition_for(key.encode(), self.partitions)


@dataclass(frozen=True, slots=True)
class Tick:
    """One run of the watermark timer for one partition (``now``: the caller's wall clock;
    ``wm``: the partition's event-time watermark; ``judged``: ``wm`` minus the advance delay,
    where windows are closed)."""

    now: float
    wm: float
    judged: float


class TrackedStore(MutableMapping[str, Any]):
    """A dict that remembers which keys were set or deleted since `take_dirty`.

    The stateful engines update their states in place and then store them again, so every
    store counts as a change. `data` is the plain dict (`Family.load` fills it directly: a
    loaded key is not a change).

    >>> s = TrackedStore({"a": 1})
    >>> s["b"] = 2; del s["a"]
    >>> sorted(s.take_dirty()), s.take_dirty(), dict(s)
    (['a', 'b'], set(), {'b': 2})
    >>> s.pop("b"), s.pop("x", 0), s.take_dirty()
    (2, 0, {'b'})
    """

    def __init__(self, data: Iterable[tuple[str, Any]] = ()) -> None:
        self.data: dict[str, Any] = dict(data)
        self.dirty: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.dirty.add(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def get(self, key: str, default: Any = None) -> Any:
        """``dict.get`` without the ABC's try/except (hot path)."""
        return self.data.get(key, default)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """``dict.pop`` (a change when the key was there) without the ABC's two lookups."""
        data = self.data
        if key in data:
            self.dirty.add(key)
            return data.pop(key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def take_dirty(self) -> set[str]:
        """The keys changed since the last call (and forget them)."""
        out, self.dirty = self.dirty, set()
        return out

    def dump(self, kind: str) -> Iterator[Dumped]:
        """`Family.dump` pairs for the keys changed since the last call, in key order."""
        data = self.data
        for key in sorted(self.take_dirty()):
            yield kind, key, data.get(key)

    def drop_unless(self, keep: Callable[[str], bool]) -> None:
        """Delete (as changes) every key for which ``keep`` is false."""
        for key in [k for k in self.data if not keep(k)]:
            del self[key]


class Family(Generic[S]):
    """Base class of a stateful family; see the module docstring."""

    #: Key in `PartitionState.states`, label in logs, `StatefulOptions` switch.
    name: ClassVar[str]
    #: The ``KLAXON_STATEFUL_DETECTORS`` value that switches it on (None: always on).
    setting: ClassVar[str | None] = None
    #: The changelog kind letters it owns, each with what its keys hold.
    kinds: ClassVar[Mapping[str, str]]
    #: Its field in by-group messages (None: it sends none) and the field's value in a
    #: message that carries nothing for it.
    rekey_field: ClassVar[str | None] = None
    rekey_empty: ClassVar[Any] = None

    def __init__(self, ctx: FamilyContext) -> None:
        self.ctx = ctx
        self.options = ctx.options
        self.enabled = self.is_enabled(ctx.options)

    @classmethod
    def is_enabled(cls, options: StatefulOptions) -> bool:
        """Whether its input hooks run (default: its `StatefulOptions` switch, if any)."""
        switch = getattr(options, cls.name, True)
        return bool(switch)

    # -- rules -------------------------------------------------------------------------------

    def set_rules(self, ruleset: RuleSet) -> None:
        """Compile a (reloaded) rule set; called before any other hook."""

    def rule_ids(self) -> Collection[str]:
        """Base rule ids whose stateless matches `on_match` gets."""
        return ()

    def rules_held_back(self) -> frozenset[str]:
        """Base rule ids whose own matches should not become alerts."""
        return frozenset()

    def rules_published(self) -> frozenset[str]:
        """Base rule ids whose matches are alerts even if a family holds them back."""
        return frozenset()

    # -- per-partition state -----------------------------------------------------------------

    def new_state(self, now: float) -> S:
        """An empty state for one partition (``now``: the caller's wall clock)."""
        raise NotImplementedError

    def rebuild(self, state: S) -> S:
        """The state to keep after `set_rules` (delete what removed detectors held)."""
        return state

    def dump(self, state: S, now: float | None) -> Iterable[Dumped]:
        """Changelog pairs for what changed since the last call (``now``: the caller's wall
        clock, for periodic checkpoints; None: everything now)."""
        raise NotImplementedError

    def load(self, state: S, kind: str, key: str, value: Any) -> None:
        """Put one changelog pair of one of its `kinds` into a fresh state. Raise
        `detections.stateful.errors.StatefulError`, ValueError, KeyError or TypeError on a
        value it cannot read (the processor skips and counts it)."""
        raise NotImplementedError

    def loaded(self, state: S) -> S:
        """The state after its last loaded pair (default: `rebuild`)."""
        return self.rebuild(state)

    # -- input -------------------------------------------------------------------------------

    def on_events(
        self,
        state: S,
        events: Sequence[dict[str, Any]],
        times: Sequence[float | None],
        newest: dict[str, float],
        alerts: Alerts,
    ) -> None:
        """One events message; ``times``: each event's `event_time` (None: it has none),
        computed once for every family; ``newest``: the largest event time per cluster."""

    def on_match(self, state: S, match: Match, alerts: Alerts) -> None:
        """One stateless match of a rule in `rule_ids` (matches in message order)."""

    def take_rekeyed(self, state: S) -> dict[int, Any]:
        """Its by-group payloads since the last call, per destination partition (and forget
        them)."""
        return {}

    def rekey_key(self, payload: Any) -> str:
        """The (informative) Kafka key of a by-group message whose first payload is this."""
        return self.name

    def on_rekeyed(self, state: S, payload: Any, alerts: Alerts) -> float | None:
        """Its field of one by-group message (None when absent); returns the newest event time
        it applied (it moves the partition's watermark), if any."""
        return None

    def on_tick(self, state: S, tick: Tick, alerts: Alerts) -> None:
        """The watermark timer."""
