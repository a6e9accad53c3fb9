"""Sigma correlation rules (specification v2) over event time: pure state, pure steps.

A correlation counts matches of its base rules per *group* (its ``group-by`` values plus the
event's ``cluster``, so two clusters never share a window) over a window of ``timespan``
seconds of **event time** (:func:`detections.stateful.timeutil.event_time`). The state of
one group is a small JSON value (lists, numbers, strings), so the pipeline can keep it in a
Faust table under :attr:`Observation.key` and a restart in the middle of a window continues
exactly where it stopped.

Semantics (also in ``docs/stateful.md``):

* **Sliding windows** (conditions made only of ``gt``/``gte``, and ``temporal`` /
  ``temporal_ordered``): the window ending at an event at time *e* holds the group's
  events with time in ``(e - timespan, e]`` (start exclusive, end inclusive: two events
  exactly one timespan apart never share a window). The rule fires as soon as some window
  satisfies the condition; adding events can never un-satisfy these conditions, so firing
  early is always right.
* **Closed windows** (any ``lt``/``lte``/``eq``/``neq``): such conditions need the final
  count, so a window ``[s, s + timespan)`` opens at the group's first event *s* and is judged
  once the watermark passes ``s + timespan + lateness`` (a later event of the group, or
  :func:`advance` from the pipeline's timer). The next window opens at the next event.
* **Late and out-of-order events**: each group has a watermark, the largest event time seen
  (or passed to :func:`advance`). An event older than ``watermark - lateness`` is *late*:
  counted in the state (``late``) and ignored. Anything newer is inserted in time order,
  and every window that now contains it is re-evaluated.
* **Episodes and re-arm**: after a sliding window ending at *f* fires, the group cannot fire
  again for a window ending before ``f + timespan``: successive alerts' windows never
  overlap, and a sustained burst gives one alert per timespan, not one per event.
* **Alert ids**: ``uuid5(correlation id | group key | auditID of the window's first event)``,
  so a replay of the same events gives the same ids.
* **Bounds**: at most ``max_events_per_group`` events are kept per group (oldest dropped and
  counted in ``dropped``); events that can no longer fall into an open window are pruned.

>>> from detections.loader import load_rules
>>> rs = load_rules([], texts={"r.yml": '''
... title: Forbidden
... id: 6f1c2d44-5b1e-4c1a-9d3e-2b7a8c9d0e1f
... name: forbidden
... detection: {selection: {responseStatus.code: 403}, condition: selection}
... ---
... title: Forbidden burst
... id: 2d0d6b1e-7a3c-4b8e-9f21-5c6d7e8f9a0b
... correlation: {type: event_count, rules: [forbidden], group-by: [sourceIP], timespan: 1m,
...               condition: {gte: 3}}
... '''})
>>> spec = CorrelationSpec.from_correlation(rs.correlations[0], rs)
>>> state, fired = None, []
>>> for i in range(4):
...     ev = {"auditID": f"a{i}", "sourceIPs": ["10.0.0.9"], "cluster": "c1",
...           "requestReceivedTimestamp": f"2026-11-27T09:00:{10 * i:02d}Z"}
...     obs = observe(spec, 0, ev)
...     state, alerts = step(spec, state, obs)
...     fired += [(a["summary"], a["evidence"]["count"]) for a in alerts]
>>> fired
[('sourceIP=10.0.0.9: 3 matches of Forbidden within 1m (≥ 3)', 3)]
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from detections.engine import Match
from detections.fields import Cache, Getter, compile_path, first_text, first_texts, resolve_alias
from detections.rule import Correlation, RuleSet, source_name
from detections.stateful.alerts import Detector, make_alert, stable_id
from detections.stateful.errors import StateFormatError, UnsupportedCorrelation
from detections.stateful.timeutil import event_time, iso
from schemas.keys import cluster_of

STATE_VERSION = 1
_OPS: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda n, v: n > v,
    "gte": lambda n, v: n >= v,
    "lt": lambda n, v: n < v,
    "lte": lambda n, v: n <= v,
    "eq": lambda n, v: n == v,
    "neq": lambda n, v: n != v,
}
_OP_TEXT = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "eq": "=", "neq": "≠"}
_MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class Settings:
    """Knobs shared by every correlation (event-time seconds)."""

    lateness: float = 30.0
    max_events_per_group: int = 1000


DEFAULT_SETTINGS = Settings()


@dataclass(frozen=True, slots=True)
class Condition:
    """A correlation condition: every ``(operator, number)`` must hold for the measured count.

    >>> c = Condition((("gte", 5.0), ("lt", 10.0)))
    >>> c.holds(5), c.holds(10), c.monotone, c.text()
    (True, False, False, '≥ 5, < 10')
    """

    ops: tuple[tuple[str, float], ...]
    field: str | None = None

    def holds(self, n: float) -> bool:
        """True when every comparison holds for ``n``."""
        return all(_OPS[op](n, v) for op, v in self.ops)

    @property
    def monotone(self) -> bool:
        """True when more events can never turn a true condition false (only gt/gte)."""
        return all(op in ("gt", "gte") for op, _ in self.ops)

    def text(self) -> str:
        """Human form, e.g. ``≥ 20``."""
        return ", ".join(f"{_OP_TEXT[op]} {_num(v)}" for op, v in self.ops)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


@dataclass(frozen=True)
class CorrelationSpec:
    """A validated Sigma correlation, compiled for :func:`step`."""

    id: str
    title: str
    type: str
    rules: tuple[str, ...]
    rule_titles: tuple[str, ...]
    group_by: tuple[str, ...]
    timespan: float
    timespan_text: str
    condition: Condition
    generate: bool
    detector: Detector
    _group_getters: tuple[Getter, ...] = field(repr=False, compare=False, default=())
    _value_getter: Getter | None = field(repr=False, compare=False, default=None)

    @classmethod
    def from_correlation(cls, corr: Correlation, ruleset: RuleSet | None = None) -> CorrelationSpec:
        """Compile a loaded :class:`Correlation`; raises :class:`UnsupportedCorrelation`."""
        ident = corr.id or stable_id("correlation", corr.name or corr.title)
        if ruleset is not None:
            chained = {c.id for c in ruleset.correlations if c.id} | {
                c.name for c in ruleset.correlations if c.name
            }
            for r in corr.rules:
                if r in chained and (ruleset.find(r) is None):
                    raise UnsupportedCorrelation(
                        f"correlation {corr.title!r} refers to correlation {r!r}: "
                        "chained correlations are not supported yet"
                    )
        titles = []
        for r in corr.rules:
            found = ruleset.find(r) if ruleset is not None else None
            titles.append(found.title if found is not None else r)
        raw = dict(corr.condition)
        cond_field = raw.pop("field", None)
        ops = tuple((str(k), float(v)) for k, v in sorted(raw.items()))
        if corr.type in ("event_count", "value_count") and not ops:
            raise UnsupportedCorrelation(f"correlation {corr.title!r} has no comparison")
        if corr.type == "value_count" and not isinstance(cond_field, str):
            raise UnsupportedCorrelation(f"value_count {corr.title!r} needs condition.field")
        if corr.timespan_seconds <= 0:
            raise UnsupportedCorrelation(f"correlation {corr.title!r} has no timespan")
        condition = Condition(ops, cond_field if isinstance(cond_field, str) else None)
        if corr.type in ("temporal", "temporal_ordered") and not condition.monotone:
            raise UnsupportedCorrelation(
                f"{corr.type} {corr.title!r}: only gt/gte conditions are meaningful"
            )
        detector = Detector(
            id=ident,
            title=corr.title,
            kind="correlation",
            level=corr.level or "medium",
            tags=corr.tags,
            description=corr.description
            or f"Sigma {corr.type} correlation over {', '.join(titles)}.",
            source=source_name(corr.file, "detections/rules/"),
            author=corr.author or "Klaxon",
            mtmk=corr.klaxon.mtmk if corr.klaxon else (),
            falsepositives=corr.falsepositives,
        )
        return cls(
            id=ident,
            title=corr.title,
            type=corr.type,
            rules=corr.rules,
            rule_titles=tuple(titles),
            group_by=corr.group_by,
            timespan=float(corr.timespan_seconds),
            timespan_text=corr.timespan,
            condition=condition,
            generate=corr.generate,
            detector=detector,
            _group_getters=tuple(compile_path(resolve_alias(f)) for f in corr.group_by),
            _value_getter=compile_path(resolve_alias(condition.field)) if condition.field else None,
        )

    @property
    def sliding(self) -> bool:
        """True when windows slide and fire eagerly (see the module docstring)."""
        return self.condition.monotone

    @property
    def enough(self) -> int | None:
        """For gt/gte conditions: a count at which measuring may stop (it already holds)."""
        if not self.condition.monotone or not self.condition.ops:
            return None
        return max(int(v) + (1 if op == "gt" else 0) for op, v in self.condition.ops)

    def measure(self, window: list[list[Any]], enough: int | None = None) -> int:
        """The number the condition is compared with, for the events of one window.

        With ``enough``, value counting may stop once that many distinct values were seen.
        """
        if self.type == "event_count":
            return len(window)
        if self.type == "value_count":
            seen: set[Any] = set()
            for e in window:
                if e[2] is not None:
                    seen.add(e[2])
                    if enough is not None and len(seen) >= enough:
                        break
            return len(seen)
        if self.type == "temporal":
            return len({e[1] for e in window})
        # temporal_ordered: how many of the rules occur in the listed order (greedy scan).
        k = 0
        for e in window:
            if k < len(self.rules) and e[1] == k:
                k += 1
        return k

    def satisfied(self, n: int) -> bool:
        """Whether a measured count fires the correlation."""
        if self.type in ("temporal", "temporal_ordered") and not self.condition.ops:
            return n >= len(self.rules)
        return self.condition.holds(n)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 µs a match
class Observation:
    """One base-rule match, reduced to what a correlation needs (treat as read-only)."""

    key: str
    group: tuple[str, ...]
    cluster: str
    time: float
    rule: int
    value: str | None
    event_id: str
    event: dict[str, Any]


def group_key(spec: CorrelationSpec, event: dict[str, Any]) -> str | None:
    """The state key of ``event``'s group, or None when a group-by field is missing.

    The pipeline must route all events of one key to one worker (the events topic is keyed by
    ``cluster|user.username``; correlations grouped by anything else need a re-keyed stream).
    """
    cache: Cache = {}
    values = [first_text(g, event, cache) for g in spec._group_getters]
    if any(v is None for v in values):
        return None
    return _key(spec.id, cluster_of(event), values)


def _key(ident: str, cluster: str, values: Iterable[str | None]) -> str:
    return f"{ident}|{cluster}|" + orjson.dumps(list(values)).decode()


def observe(spec: CorrelationSpec, rule_index: int, event: dict[str, Any]) -> Observation | None:
    """Reduce a match of ``spec.rules[rule_index]`` to an observation (None: cannot be used).

    An event is unusable when it has no parseable time, lacks a group-by field, or (for
    ``value_count``) lacks the counted field.
    """
    return observe_at(spec, rule_index, event, event_time(event))


def observe_at(
    spec: CorrelationSpec, rule_index: int, event: dict[str, Any], t: float | None
) -> Observation | None:
    """:func:`observe` with the event's `event_time` already known (one per match, whatever
    the number of correlations over its rule)."""
    if t is None:
        return None
    cache: Cache = {}
    values = first_texts(spec._group_getters, event, cache)
    if values is None:
        return None
    value = None
    if spec._value_getter is not None:
        value = first_text(spec._value_getter, event, cache)
        if value is None:
            return None
    cluster = cluster_of(event)
    return Observation(
        f"{spec.id}|{cluster}|{orjson.dumps(values).decode()}",
        tuple(values),
        cluster,
        t,
        rule_index,
        value,
        str(event.get("auditID") or ""),
        event,
    )


def new_state(obs: Observation) -> dict[str, Any]:
    """An empty group state (JSON-serialisable)."""
    return {
        "v": STATE_VERSION,
        "cluster": obs.cluster,
        "group": list(obs.group),
        "wm": None,  # watermark: largest event time seen or advanced to
        "ev": [],  # [time, rule index, value, auditID], sorted by time then arrival
        "fired": None,  # sliding: end of the last window that fired
        "anchor": None,  # closed: start of the open window
        "closed": None,  # closed: end of the last judged window
        "late": 0,
        "dropped": 0,
    }


def check_state(state: Any) -> dict[str, Any]:
    """Validate a state read back from a checkpoint; raises :class:`StateFormatError`."""
    if not isinstance(state, dict) or state.get("v") != STATE_VERSION:
        raise StateFormatError(f"not a v{STATE_VERSION} correlation state: {state!r:.80}")
    if not isinstance(state.get("ev"), list) or not isinstance(state.get("group"), list):
        raise StateFormatError("correlation state lacks its event list or group")
    return state


def _times(state: dict[str, Any]) -> list[float]:
    return [e[0] for e in state["ev"]]


def _time(entry: list[Any]) -> float:
    return float(entry[0])


def step(
    spec: CorrelationSpec,
    state: dict[str, Any] | None,
    obs: Observation,
    settings: Settings = DEFAULT_SETTINGS,
    *,
    copy: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Add one observation to its group's state; returns the new state and any alerts.

    The input state is not modified (the result is a new dict), so a caller can keep the old
    one if writing the new one fails; ``copy=False`` updates it in place instead (for an
    owner of the state, such as :class:`CorrelationEngine`, saving a copy per match).
    """
    if state is None:
        st = new_state(obs)
    else:
        st = _copy(check_state(state)) if copy else check_state(state)
    t = obs.time
    wm = st["wm"]
    if (wm is not None and t < wm - settings.lateness) or (
        st["closed"] is not None and t < st["closed"]
    ):
        st["late"] += 1
        return st, []
    ev: list[list[Any]] = st["ev"]
    pos = bisect.bisect_right(ev, t, key=lambda e: e[0])
    ev.insert(pos, [t, obs.rule, obs.value, obs.event_id])
    st["wm"] = t if wm is None else max(wm, t)
    if spec.sliding:
        alerts = _slide(spec, st, t, obs, settings)
    else:
        if st["anchor"] is None or t < st["anchor"]:
            st["anchor"] = t
        alerts = _close(spec, st, settings)
    _prune(spec, st, settings)
    return st, alerts


def advance(
    spec: CorrelationSpec,
    state: dict[str, Any],
    now: float,
    settings: Settings = DEFAULT_SETTINGS,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Move the group's watermark to ``now`` (event time), judging windows that closed.

    Returns ``(None, alerts)`` when the group holds nothing worth keeping (delete its key).
    ``now`` must be an event-time watermark, e.g. the largest event time the worker has seen.
    """
    st = _copy(check_state(state))
    if st["wm"] is None or now > st["wm"]:
        st["wm"] = now
    alerts = [] if spec.sliding else _close(spec, st, settings)
    _prune(spec, st, settings)
    if not st["ev"] and (st["fired"] is None or st["wm"] >= st["fired"] + spec.timespan):
        return None, alerts
    return st, alerts


def _copy(st: dict[str, Any]) -> dict[str, Any]:
    out = dict(st)
    out["ev"] = [list(e) for e in st["ev"]]
    out["group"] = list(st["group"])
    return out


def _slide(
    spec: CorrelationSpec, st: dict[str, Any], t: float, obs: Observation, settings: Settings
) -> list[dict[str, Any]]:
    """Evaluate every window that now contains the event at ``t``; fire at most once."""
    ev = st["ev"]
    span = spec.timespan
    start = bisect.bisect_left(ev, t, key=_time)
    seen_end: float | None = None
    for i in range(start, len(ev)):
        end = ev[i][0]
        if end >= t + span:
            break
        if end == seen_end:
            continue
        seen_end = end
        if st["fired"] is not None and end < st["fired"] + span:
            continue
        lo = bisect.bisect_right(ev, end - span, key=_time)
        hi = bisect.bisect_right(ev, end, key=_time)
        window = ev[lo:hi]
        if spec.satisfied(spec.measure(window, spec.enough)):
            st["fired"] = end
            n = spec.measure(window)
            return [_alert(spec, st, obs.key, window, end, n, obs.event)]
    return []


def _close(spec: CorrelationSpec, st: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    """Judge every closed window ``[anchor, anchor + timespan)`` the watermark has passed."""
    alerts: list[dict[str, Any]] = []
    span = spec.timespan
    key = _key(spec.id, st["cluster"], st["group"])
    while st["anchor"] is not None and st["wm"] >= st["anchor"] + span + settings.lateness:
        anchor = st["anchor"]
        times = _times(st)
        lo = bisect.bisect_left(times, anchor)
        hi = bisect.bisect_left(times, anchor + span)
        window = st["ev"][lo:hi]
        n = spec.measure(window)
        if window and spec.satisfied(n):
            end = window[-1][0]
            alerts.append(_alert(spec, st, key, window, end, n, _context(spec, st, window)))
        del st["ev"][:hi]
        st["closed"] = anchor + span
        st["anchor"] = st["ev"][0][0] if st["ev"] else None
    return alerts


def _prune(spec: CorrelationSpec, st: dict[str, Any], settings: Settings) -> None:
    ev = st["ev"]
    if spec.sliding and st["wm"] is not None:
        horizon = st["wm"] - settings.lateness - spec.timespan
        cut = bisect.bisect_right(ev, horizon, key=lambda e: e[0])
        if cut:
            del ev[:cut]
    over = len(ev) - settings.max_events_per_group
    if over > 0:
        del ev[:over]
        st["dropped"] += over
        if not spec.sliding and ev:
            st["anchor"] = max(st["anchor"] or ev[0][0], ev[0][0])


def _context(spec: CorrelationSpec, st: dict[str, Any], window: list[list[Any]]) -> dict[str, Any]:
    """A minimal event carrying the group values, for alerts judged without a current event."""
    ctx: dict[str, Any] = {"cluster": st["cluster"], "auditID": window[-1][3] if window else ""}
    for path, value in zip(spec.group_by, st["group"], strict=False):
        canonical = resolve_alias(path)
        if canonical == "sourceIP":
            ctx["sourceIPs"] = [value]
            continue
        node = ctx
        parts = canonical.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return ctx


def _alert(
    spec: CorrelationSpec,
    st: dict[str, Any],
    key: str,
    window: list[list[Any]],
    end: float,
    n: int,
    context: dict[str, Any],
) -> dict[str, Any]:
    first = window[0]
    group = dict(zip(spec.group_by, st["group"], strict=False))
    who = ", ".join(f"{k}={v}" for k, v in group.items()) or st["cluster"]
    per_rule = [0] * len(spec.rules)
    for e in window:
        per_rule[e[1]] += 1
    evidence: dict[str, Any] = {
        "type": spec.type,
        "count": n,
        "condition": spec.condition.text() or f"all {len(spec.rules)} rules",
        "group": group,
        "window": {"start": iso(first[0]), "end": iso(end), "timespan": spec.timespan_text},
        "events": len(window),
        "event_ids": [e[3] for e in window[:_MAX_LISTED]],
        "rules": dict(zip(spec.rule_titles, per_rule, strict=False)),
        "late_ignored": st["late"],
    }
    if spec.type == "value_count":
        evidence["field"] = spec.condition.field
        evidence["values"] = sorted({e[2] for e in window if e[2] is not None})[:_MAX_LISTED]
        what = f"distinct {spec.condition.field} in {' / '.join(spec.rule_titles)}"
        summary = f"{who}: {n} {what} within {spec.timespan_text} ({spec.condition.text()})"
    elif spec.type == "event_count":
        what = f"matches of {' / '.join(spec.rule_titles)}"
        summary = f"{who}: {n} {what} within {spec.timespan_text} ({spec.condition.text()})"
    else:
        joiner = " then " if spec.type == "temporal_ordered" else " and "
        summary = f"{who}: {joiner.join(spec.rule_titles)} within {spec.timespan_text}"
    return make_alert(
        spec.detector, stable_id(spec.id, key, first[3]), summary, context, evidence, end
    )


class CorrelationEngine:
    """All correlations of a rule set over one state store (a dict, or a Faust table).

    >>> from detections.loader import load_rules
    >>> eng = CorrelationEngine(load_rules())
    >>> sorted(s.type for s in eng.specs)[:2]
    ['event_count', 'event_count']
    """

    def __init__(
        self,
        ruleset: RuleSet,
        settings: Settings = DEFAULT_SETTINGS,
        store: MutableMapping[str, Any] | None = None,
        *,
        specs: Iterable[CorrelationSpec] | None = None,
    ) -> None:
        """``specs``: the correlations to run, already compiled (default: all of ``ruleset``)."""
        self.settings = settings
        self.store: MutableMapping[str, Any] = {} if store is None else store
        self.specs = (
            tuple(CorrelationSpec.from_correlation(c, ruleset) for c in ruleset.correlations)
            if specs is None
            else tuple(specs)
        )
        self._by_spec = {s.id: s for s in self.specs}
        self._targets: dict[str, list[tuple[CorrelationSpec, int]]] = {}
        self._generate: dict[str, bool] = {}  # base rule id -> some correlation generates it
        for spec in self.specs:
            for i, ref in enumerate(spec.rules):
                rule = ruleset.find(ref)
                rule_id = rule.id if rule is not None else ref
                self._targets.setdefault(rule_id, []).append((spec, i))
                self._generate[rule_id] = self._generate.get(rule_id, False) or spec.generate
        self.unusable = 0  # matches without time or group-by values

    def targets(self, match: Match) -> list[tuple[CorrelationSpec, int]]:
        """The (correlation, rule position) pairs a match feeds."""
        return self._targets.get(match.rule.id, [])

    def rule_targets(self, rule_id: str) -> list[tuple[CorrelationSpec, int]]:
        """The (correlation, rule position) pairs a match of rule ``rule_id`` feeds."""
        return self._targets.get(rule_id, [])

    def process(self, match: Match) -> list[dict[str, Any]]:
        """Feed one base-rule match to every correlation that counts it."""
        alerts: list[dict[str, Any]] = []
        for spec, idx in self.targets(match):
            obs = observe(spec, idx, match.event)
            if obs is None:
                self.unusable += 1
                continue
            state, fired = step(spec, self.store.get(obs.key), obs, self.settings, copy=False)
            self.store[obs.key] = state
            alerts.extend(fired)
        return alerts

    def advance(self, now: float) -> list[dict[str, Any]]:
        """Close windows and forget idle groups up to event time ``now`` (call from a timer)."""
        alerts: list[dict[str, Any]] = []
        for key in list(self.store):
            spec = self._by_spec.get(key.split("|", 1)[0])
            if spec is None:
                continue
            state, fired = advance(spec, self.store[key], now, self.settings)
            if state is None:
                del self.store[key]
            else:
                self.store[key] = state
            alerts.extend(fired)
        return alerts

    def late(self) -> int:
        """Late events ignored across the groups currently held."""
        return sum(int(s.get("late", 0)) for s in self.store.values())

    def suppressed_rules(self) -> frozenset[str]:
        """Base rule ids whose own matches should not become alerts (``generate: false``).

        A rule is suppressed when every correlation that references it has ``generate: false``.
        """
        return frozenset(k for k, gen in self._generate.items() if not gen)

    def __iter__(self) -> Iterator[CorrelationSpec]:
        return iter(self.specs)


def generated_rule_ids(ruleset: RuleSet) -> frozenset[str]:
    """Base rule ids referenced by a correlation with ``generate: true``: their own matches
    are alerts even when something else (another correlation, a new terms detector) would
    hold them back."""
    return frozenset(
        (r.id if (r := ruleset.find(ref)) else ref)
        for c in ruleset.correlations
        if c.generate
        for ref in c.rules
    )
