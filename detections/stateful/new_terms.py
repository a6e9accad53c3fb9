"""New terms detections: alert when a value appears for the first time.

A Klaxon extension in the spirit of Elastic's ``new_terms`` rules, written as YAML documents
with a ``new_terms:`` block that names Sigma base rules (by id or name), like a correlation:

.. code-block:: yaml

    title: New user agent for a service account
    id: 5b0f...                  # UUID, required
    level: medium
    tags: [attack.initial-access, attack.t1078]
    new_terms:
      rules: [serviceaccount-request]   # base rules whose matches are considered
      fields: [userAgent]               # the term: the combination of these values
      group-by: [user.username]         # terms are remembered per group (and per cluster)
      learning: 7d                      # no alerts until the cluster was watched this long
      group-learning: 1h                # ...nor during a new group's first hour (optional)
      ttl: 30d                          # a term unseen this long is forgotten (optional)
      max-terms: 200                    # per group, least recently seen evicted first
      max-groups: 100000                # per detector, least recently active evicted first
      transforms: {userAgent: product}  # product | lower | cidr:N (IPv4 /N, IPv6 /64)

Semantics: every usable match records its term (with the largest event time it was seen at);
it alerts when the term is not known for the group **and** the learning periods are over.
Event time throughout, so a replay decides exactly as live processing did. State per group
is a JSON value ``{"v", "first", "terms": {term: last_seen}, "evicted"}`` whose ``terms`` keep
recency order (the LRU order survives a checkpoint). Alert ids are
``uuid5(detector id | group key | term | auditID)``.

>>> spec = NewTermsSpec.from_document({"title": "New UA",
...     "id": "5b0f2c1e-8f4a-4a5e-9c3b-1d2e3f4a5b6c",
...     "new_terms": {"rules": ["r"], "fields": ["userAgent"], "group-by": ["user.username"],
...                   "learning": "1h", "transforms": {"userAgent": "product"}}}, "x.yml")
>>> ev = {"user": {"username": "sa"}, "userAgent": "curl/8.5.0", "auditID": "a1",
...       "requestReceivedTimestamp": "2026-11-27T09:00:00Z"}
>>> obs = observe(spec, ev)
>>> obs.term, obs.key
('["curl"]', '5b0f2c1e-8f4a-4a5e-9c3b-1d2e3f4a5b6c|default|["sa"]')
>>> state, alerts = step(spec, None, obs, learning_start=obs.time - 7200)
>>> [a["summary"] for a in alerts]
['user.username=sa: first userAgent=curl']
>>> step(spec, state, obs, learning_start=obs.time - 7200)[1]
[]
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

import detections.stateful as _package
from detections import validation
from detections.engine import Match
from detections.errors import Lint, Problem, RuleLoadError, suggest
from detections.fields import (
    Cache,
    Getter,
    compile_path,
    first_text,
    first_texts,
    known_field_paths,
    resolve_alias,
)
from detections.lints.base import Context, Subject
from detections.lints.registry import run_lints
from detections.loader import rule_files
from detections.rule import LEVELS, META_KEYS, RuleSet, source_name
from detections.stateful.alerts import Detector, make_alert, stable_id
from detections.stateful.errors import StateFormatError
from detections.stateful.timeutil import event_time, iso
from detections.validation import Checker
from detections.yamlsrc import Document, YamlProblems, load_documents
from detections.yamlsrc import Path as DocPath
from schemas.keys import cluster_of

# The package's file, not this module's: a compiled module's (`schemas.native`) is elsewhere.
PACKAGED = Path(str(_package.__file__)).resolve().parent / "newterms"
STATE_VERSION = 1
DOC_KEYS = (*META_KEYS, "tags", "falsepositives", "level", "new_terms")
BLOCK_KEYS = (
    "rules",
    "fields",
    "group-by",
    "learning",
    "group-learning",
    "ttl",
    "max-terms",
    "max-groups",
    "transforms",
)
_CIDR = re.compile(r"^cidr:(\d{1,3})$")
Transform = Callable[[str], str]


def parse_duration(text: Any) -> float | None:
    """Seconds for a duration as rules write them (:func:`detections.validation.parse_duration`:
    ``30s``, ``5m``, ``1h``, ``7d``, ``2w``, ``1M``, ``1y``); None when malformed.

    >>> parse_duration("7d"), parse_duration("90m"), parse_duration("soon")
    (604800.0, 5400.0, None)
    """
    seconds = validation.parse_duration(text)
    return None if seconds is None else float(seconds)


def ua_product(value: str) -> str:
    """The product token of a user agent (``kubectl/v1.31 (linux)`` -> ``kubectl``).

    Version upgrades then do not look like new clients.

    >>> ua_product("kubectl/v1.31.2 (linux/amd64) kubernetes/5864a46")
    'kubectl'
    >>> ua_product("Go-http-client/2.0")
    'Go-http-client'
    """
    return value.split("/", 1)[0].split(" ", 1)[0].strip()


def ip_network(bits: int) -> Transform:
    """A transform mapping an IP to its network (IPv4 ``/bits``, IPv6 ``/64``); non-IPs unchanged.

    >>> ip_network(24)("10.1.2.3"), ip_network(24)("2001:db8::1"), ip_network(24)("nope")
    ('10.1.2.0/24', '2001:db8::/64', 'nope')
    """

    @functools.lru_cache(maxsize=16384)  # ipaddress parsing and printing is ~4 µs a value
    def apply(value: str) -> str:
        try:
            addr = ipaddress.ip_address(value)
        except ValueError:
            return value
        prefix = bits if addr.version == 4 else 64
        return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))

    return apply


def _transform(name: str) -> Transform | None:
    if name == "product":
        return ua_product
    if name == "lower":
        return str.lower
    m = _CIDR.match(name)
    if m and 0 <= int(m.group(1)) <= 32:
        return ip_network(int(m.group(1)))
    return None


@dataclass(frozen=True)
class NewTermsSpec:
    """A validated new terms detector."""

    id: str
    title: str
    name: str | None
    rules: tuple[str, ...]
    fields: tuple[str, ...]
    group_by: tuple[str, ...]
    learning: float
    group_learning: float
    ttl: float | None
    max_terms: int
    max_groups: int
    detector: Detector
    transforms: dict[str, str] = field(default_factory=dict)
    _getters: tuple[tuple[Getter, Transform | None], ...] = field(
        repr=False, compare=False, default=()
    )
    _group_getters: tuple[Getter, ...] = field(repr=False, compare=False, default=())

    @classmethod
    def from_document(
        cls,
        doc: Mapping[str, Any] | Document,
        file: str,
        problems: list[Problem] | None = None,
    ) -> NewTermsSpec | None:
        """Validate one YAML document; problems are appended (raises if ``problems`` is None).

        Given a parsed :class:`~detections.yamlsrc.Document`, problems carry its positions
        (a plain mapping has none: they are reported at 0:0).
        """
        source = doc if isinstance(doc, Document) else Document(file, doc, (0, 0))
        own: list[Problem] = []
        spec = _Parser(own).spec(source)
        if problems is None and own:
            raise RuleLoadError(own)
        if problems is not None:
            problems.extend(own)
        return None if own else spec


class _Parser(Checker):
    """A new terms document checked with the loader's shared value checks."""

    def spec(self, doc: Document) -> NewTermsSpec | None:
        m: Mapping[str, Any] = doc.value
        self.check_keys(doc, m, DOC_KEYS, ())
        title = self.text(doc, m, "title", required=True)
        if title == "":
            self.err(doc, ("title",), "missing required key 'title'")
        ident = self.rule_id(doc, m, required=True)
        level = self.choice(doc, m, "level", LEVELS) or "medium"
        block = m.get("new_terms")
        if not isinstance(block, dict):
            self.err(doc, ("new_terms",), "'new_terms' must be a mapping", value=True)
            block = {}
        at: DocPath = ("new_terms",)
        self.check_keys(doc, block, BLOCK_KEYS, at)
        rules = self.strings(doc, block, "rules", required=True)
        fields = self.strings(doc, block, "fields", required=True)
        group_by = self.strings(doc, block, "group-by", required=False)
        examples = "30m, 12h or 7d"
        learning = self.duration(doc, block, "learning", at, examples)
        if "learning" not in block:
            self.err(
                doc, (*at, "learning"), "missing 'learning' (how long to watch before alerting)"
            )
        group_learning = self.duration(doc, block, "group-learning", at, examples) or 0
        ttl = self.duration(doc, block, "ttl", at, examples)
        max_terms = self.positive_int(doc, block, "max-terms", at, 1000)
        max_groups = self.positive_int(doc, block, "max-groups", at, 100_000)
        transforms = block.get("transforms", {}) or {}
        compiled_tf: dict[str, Transform] = {}
        if not isinstance(transforms, dict):
            self.err(
                doc,
                (*at, "transforms"),
                "transforms must map a field to product, lower or cidr:N",
                value=True,
            )
            transforms = {}
        for f, name in transforms.items():
            tf = _transform(str(name))
            where = (*at, "transforms", str(f))
            if f not in fields:
                self.err(doc, where, f"'{f}' is not one of the fields", suggest(str(f), fields))
            if tf is None:
                self.err(doc, where, f"unknown transform {name!r}", value=True)
            else:
                compiled_tf[str(f)] = tf
        if self.problems or title is None or ident is None or learning is None:
            return None
        tags = m.get("tags") or []
        detector = Detector(
            id=ident,
            title=title,
            kind="new_terms",
            level=level,
            tags=tuple(str(t) for t in tags) if isinstance(tags, list) else (),
            description=str(m.get("description") or "").strip(),
            source=source_name(doc.file, "detections/stateful/newterms/"),
            falsepositives=tuple(str(x) for x in m.get("falsepositives") or ()),
        )
        return NewTermsSpec(
            id=ident,
            title=title,
            name=str(m["name"]) if m.get("name") else None,
            rules=rules,
            fields=fields,
            group_by=group_by,
            learning=float(learning),
            group_learning=float(group_learning),
            ttl=None if ttl is None else float(ttl),
            max_terms=max_terms,
            max_groups=max_groups,
            detector=detector,
            transforms={str(k): str(v) for k, v in transforms.items()},
            _getters=tuple((compile_path(resolve_alias(f)), compiled_tf.get(f)) for f in fields),
            _group_getters=tuple(compile_path(resolve_alias(f)) for f in group_by),
        )

    def strings(
        self, doc: Document, block: Mapping[str, Any], key: str, *, required: bool
    ) -> tuple[str, ...]:
        """A list of field or rule names (at least one when ``required``)."""
        value = block.get(key)
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            self.err(doc, ("new_terms", key), f"'{key}' must be a list of strings", value=True)
            return ()
        before = len(self.problems)
        found = self.text_list(doc, block, key, ("new_terms",))
        if required and not found and len(self.problems) == before:
            self.err(doc, ("new_terms", key), f"'{key}' needs at least one entry")
        return found


def _subject(spec: NewTermsSpec, doc: Document) -> Subject:
    """A new terms document as the lints see it: its tags and the fields it reads."""
    block = doc.value.get("new_terms", {})
    read: list[tuple[DocPath, str]] = []
    for key, names in (("fields", spec.fields), ("group-by", spec.group_by)):
        listed = isinstance(block.get(key), list)
        read += [
            ((("new_terms", key, i) if listed else ("new_terms", key)), name)
            for i, name in enumerate(names)
        ]
    return Subject("new_terms", doc, tags=spec.detector.tags, fields=tuple(read))


def load_new_terms(
    paths: Iterable[str | os.PathLike[str]] | None = None,
    ruleset: RuleSet | None = None,
    *,
    lints: list[Lint] | None = None,
) -> tuple[NewTermsSpec, ...]:
    """Load new terms documents (default: the packaged folder); checks base rules exist.

    Raises :class:`detections.RuleLoadError` listing every problem, each at its line and
    column. ``lints``, when given, receives the lints of the loaded documents.

    >>> from detections import load_rules
    >>> sorted(s.title for s in load_new_terms(ruleset=load_rules()))[0]
    'First secret read by an identity'
    """
    problems: list[Problem] = []
    files = rule_files([PACKAGED] if paths is None else paths, problems)
    loaded: list[tuple[NewTermsSpec, Document]] = []
    for f in files:
        try:
            docs = load_documents(f.read_text(encoding="utf-8"), str(f))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(f), 0, 0, "", f"cannot read new terms file: {exc}"))
            continue
        except YamlProblems as exc:
            problems.extend(exc.problems)
            continue
        for doc in docs:
            if doc.value is None:
                continue
            if not isinstance(doc.value, dict):
                problems.append(doc.problem((), "a document must be a mapping"))
                continue
            spec = NewTermsSpec.from_document(doc, str(f), problems)
            if spec is None:
                continue
            if ruleset is not None:
                _check_base_rules(spec, doc, ruleset, problems)
            loaded.append((spec, doc))
    _check_unique_ids(loaded, problems)
    if problems:
        raise RuleLoadError(problems)
    if lints is not None:
        context = Context(known_field_paths())
        for spec, doc in loaded:
            lints.extend(run_lints(_subject(spec, doc), context))
    return tuple(spec for spec, _ in loaded)


def _check_base_rules(
    spec: NewTermsSpec, doc: Document, ruleset: RuleSet, problems: list[Problem]
) -> None:
    """A problem for each base rule ``spec`` names that ``ruleset`` does not have."""
    names = [x.name for x in ruleset.rules if x.name]
    listed = isinstance(doc.value["new_terms"].get("rules"), list)
    for i, r in enumerate(spec.rules):
        if ruleset.find(r) is None:
            problems.append(
                doc.problem(
                    ("new_terms", "rules", i) if listed else ("new_terms", "rules"),
                    f"new terms detector names unknown rule '{r}'",
                    suggest(r, names),
                    value=True,
                )
            )


def _check_unique_ids(loaded: list[tuple[NewTermsSpec, Document]], problems: list[Problem]) -> None:
    """A problem for each document reusing an id of an earlier one."""
    first: dict[str, tuple[NewTermsSpec, Document]] = {}
    for spec, doc in loaded:
        if spec.id in first:
            other, other_doc = first[spec.id]
            where = f"{other_doc.file}:{other_doc.mark(('id',))[0]}"
            problems.append(
                doc.problem(
                    ("id",), f"duplicate id {spec.id} (also used by '{other.title}' at {where})"
                )
            )
        else:
            first[spec.id] = (spec, doc)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs ~1 µs a match
class TermObservation:
    """One base-rule match reduced to its group key, term and time (treat as read-only)."""

    key: str
    cluster: str
    group: tuple[str, ...]
    values: tuple[str, ...]
    term: str
    time: float
    event_id: str
    event: dict[str, Any]


def observe(spec: NewTermsSpec, event: dict[str, Any]) -> TermObservation | None:
    """The observation for a matched event, or None (no time, group value or term value)."""
    return observe_at(spec, event, event_time(event))


def observe_at(
    spec: NewTermsSpec, event: dict[str, Any], t: float | None
) -> TermObservation | None:
    """:func:`observe` with the event's `event_time` already known (one per match, whatever
    the number of detectors over its rule)."""
    if t is None:
        return None
    cache: Cache = {}
    group = first_texts(spec._group_getters, event, cache)
    if group is None:
        return None
    values: list[str] = []
    for getter, tf in spec._getters:
        v = first_text(getter, event, cache)
        if v is None or v == "":
            return None
        values.append(tf(v) if tf is not None else v)
    cluster = cluster_of(event)
    return TermObservation(
        f"{spec.id}|{cluster}|{orjson.dumps(group).decode()}",
        cluster,
        tuple(group),
        tuple(values),
        orjson.dumps(values).decode(),
        t,
        str(event.get("auditID") or ""),
        event,
    )


def check_state(state: Any) -> dict[str, Any]:
    """Validate a checkpointed group state; raises :class:`StateFormatError`."""
    if (
        not isinstance(state, dict)
        or state.get("v") != STATE_VERSION
        or not isinstance(state.get("terms"), dict)
    ):
        raise StateFormatError(f"not a v{STATE_VERSION} new terms state: {state!r:.80}")
    return state


def step(
    spec: NewTermsSpec,
    state: dict[str, Any] | None,
    obs: TermObservation,
    learning_start: float,
    *,
    copy: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Record a term; alert if it is new and learning is over. Returns a new state.

    ``learning_start`` is the event time the detector started watching this cluster (kept by
    the caller: :class:`NewTermsEngine` stores it under the key ``<id>|<cluster>|#start``).
    ``copy=False`` updates ``state`` in place (for the state's owner; saves a copy per match).
    """
    if state is None:
        st: dict[str, Any] = {"v": STATE_VERSION, "first": obs.time, "terms": {}, "evicted": 0}
    else:
        old = check_state(state)
        st = {**old, "terms": dict(old["terms"])} if copy else old
        st["first"] = min(st["first"], obs.time)
    terms: dict[str, float] = st["terms"]
    last = terms.pop(obs.term, None)
    expired = last is not None and spec.ttl is not None and obs.time - last > spec.ttl
    terms[obs.term] = obs.time if last is None else max(last, obs.time)  # most recent last
    alerts: list[dict[str, Any]] = []
    learning_over = obs.time >= learning_start + spec.learning
    group_over = obs.time >= st["first"] + spec.group_learning
    if (last is None or expired) and learning_over and group_over:
        alerts.append(_alert(spec, obs, expired, len(terms) - 1))
    while len(terms) > spec.max_terms:
        del terms[next(iter(terms))]
        st["evicted"] += 1
    return st, alerts


def prune(spec: NewTermsSpec, state: dict[str, Any], now: float) -> dict[str, Any] | None:
    """Forget terms unseen for ``ttl`` at event time ``now``; None when nothing remains."""
    st = check_state(state)
    if spec.ttl is None:
        return st
    kept = {k: v for k, v in st["terms"].items() if now - v <= spec.ttl}
    if not kept:
        return None
    return {**st, "terms": kept}


def _alert(spec: NewTermsSpec, obs: TermObservation, expired: bool, known: int) -> dict[str, Any]:
    group = dict(zip(spec.group_by, obs.group, strict=False))
    term = dict(zip(spec.fields, obs.values, strict=False))
    who = ", ".join(f"{k}={v}" for k, v in group.items()) or f"cluster {obs.cluster}"
    what = ", ".join(f"{k}={v}" for k, v in term.items())
    again = " (again after more than the ttl)" if expired else ""
    evidence = {
        "group": group,
        "term": term,
        "known_terms": known,
        "learning": spec.learning,
        "first_seen": iso(obs.time),
        "forgotten_and_seen_again": expired,
    }
    return make_alert(
        spec.detector,
        stable_id(spec.id, obs.key, obs.term, obs.event_id),
        f"{who}: first {what}{again}",
        obs.event,
        evidence,
        obs.time,
    )


class NewTermsEngine:
    """Every new terms detector over one store, with a global LRU cap on groups per detector.

    The store maps ``<id>|<cluster>|<group json>`` to group states and
    ``<id>|<cluster>|#start`` to the event time the detector first saw that cluster.
    """

    def __init__(
        self,
        specs: Iterable[NewTermsSpec],
        ruleset: RuleSet | None = None,
        store: MutableMapping[str, Any] | None = None,
    ) -> None:
        self.specs = tuple(specs)
        self.store: MutableMapping[str, Any] = OrderedDict() if store is None else store
        self._targets: dict[str, list[NewTermsSpec]] = {}
        for spec in self.specs:
            for ref in spec.rules:
                rule = ruleset.find(ref) if ruleset is not None else None
                self._targets.setdefault(rule.id if rule else ref, []).append(spec)
        self._groups: dict[str, int] = {s.id: 0 for s in self.specs}
        self.evicted_groups = 0
        self.unusable = 0

    def recount(self) -> None:
        """Count the groups held per detector again from the store (the counts are not part
        of the stored state: call this after filling the store from a checkpoint)."""
        counts = {s.id: 0 for s in self.specs}
        for key in self.store:
            ident = key.split("|", 1)[0]
            if ident in counts and not key.endswith("|#start"):
                counts[ident] += 1
        self._groups = counts

    def rule_ids(self) -> frozenset[str]:
        """Base rule ids the detectors consume (their own alerts are usually suppressed)."""
        return frozenset(self._targets)

    def process(self, match: Match) -> list[dict[str, Any]]:
        """Feed one base-rule match to every detector over that rule."""
        specs = self._targets.get(match.rule.id) or (
            self._targets.get(match.rule.name, []) if match.rule.name else []
        )
        alerts: list[dict[str, Any]] = []
        event = match.event
        t = event_time(event) if specs else None
        for spec in specs:
            obs = observe_at(spec, event, t)
            if obs is None:
                self.unusable += 1
                continue
            start_key = f"{spec.id}|{obs.cluster}|#start"
            start = self.store.get(start_key)
            if start is None or obs.time < start:
                start = obs.time
                self.store[start_key] = start
            old = self.store.pop(obs.key, None)  # re-inserted last: LRU order
            if old is None:
                self._groups[spec.id] += 1
            state, fired = step(spec, old, obs, start, copy=False)
            self.store[obs.key] = state
            alerts.extend(fired)
            if self._groups[spec.id] > spec.max_groups:
                self._evict(spec)
        return alerts

    def _evict(self, spec: NewTermsSpec) -> None:
        prefix = spec.id + "|"
        for key in self.store:
            if key.startswith(prefix) and not key.endswith("|#start"):
                del self.store[key]
                self._groups[spec.id] -= 1
                self.evicted_groups += 1
                return

    def prune(self, now: float) -> None:
        """Forget expired terms and empty groups at event time ``now`` (call from a timer).

        Only groups that lost a term are stored again (a store that tracks writes, like the
        pipeline's, then writes only those)."""
        by_id = {s.id: s for s in self.specs}
        store = self.store
        for key in list(store):
            spec = by_id.get(key.split("|", 1)[0])
            if spec is None or spec.ttl is None or key.endswith("|#start"):
                continue
            state = store[key]
            kept = prune(spec, state, now)
            if kept is None:
                del store[key]
                self._groups[spec.id] -= 1
            elif len(kept["terms"]) != len(state["terms"]):
                store[key] = kept
